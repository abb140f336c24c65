/*
 * adapters/caps — how many connections a listener takes, in all and from one
 * peer. 20,500 idle connections once used up the process's open files, and
 * then no listener answered, the admin socket included. The caps keep the mail
 * listeners under the open-file limit minus a reserve (listen.ts sizes them),
 * so the admin socket and the CLI always get a descriptor.
 *
 * Over a cap a new connection is closed at once: refusing costs nothing to
 * the connections being served, and Postfix retries on its next request.
 * The listener cap is node's own `maxConnections` (the connection is closed
 * before it becomes a JS socket); the peer cap counts per address, per /64
 * for IPv6, where one host has a whole network of addresses. Unix socket
 * peers have no address: only the listener cap applies to them.
 */
import type { Server, Socket } from 'node:net';
import { canonicalIp, isIPv6, networkOf } from '../engine/address.js';

export interface ConnectionLimits {
  /** Connections one listener holds at most. */
  maxConnections: number;
  /** Connections one peer address (IPv6: one /64) holds at most, per listener group. */
  maxConnectionsPerPeer: number;
}

export interface ConnectionStats {
  /** Connections open now. */
  connectionsOpen: number;
  /** Refused because the listener was at `maxConnections`. */
  connectionsRefused: number;
  /** Refused because the peer was at `maxConnectionsPerPeer`. */
  peerConnectionsRefused: number;
}

export type Refusal = 'listener-full' | 'peer-full';

/** The key a peer is counted under: its address, or its /64 for IPv6. */
export function peerKey(address: string): string {
  const ip = canonicalIp(address) ?? address;
  return isIPv6(ip) ? networkOf(ip, 64) : ip;
}

export class ConnectionCaps {
  private readonly peers = new Map<string, number>();

  constructor(
    private readonly limits: ConnectionLimits,
    private readonly stats: ConnectionStats,
    private readonly refused: (why: Refusal, peer: string | undefined) => void,
  ) {}

  /** Caps a listener; node closes connections over the cap before they reach us and tells us. */
  watch(server: Server): void {
    server.maxConnections = this.limits.maxConnections;
    server.on('drop', (d) => {
      this.stats.connectionsRefused++;
      this.refused('listener-full', d?.remoteAddress);
    });
  }

  /**
   * Admits a new connection, or destroys it when its peer is at the cap. Returns the key
   * to release() when it closes ('' for a unix socket peer), or undefined when refused.
   */
  admit(socket: Socket): string | undefined {
    const address = socket.remoteAddress;
    if (address === undefined) {
      this.stats.connectionsOpen++;
      return '';
    }
    const key = peerKey(address);
    const n = this.peers.get(key) ?? 0;
    if (n >= this.limits.maxConnectionsPerPeer) {
      this.stats.peerConnectionsRefused++;
      socket.destroy();
      this.refused('peer-full', address);
      return undefined;
    }
    this.peers.set(key, n + 1);
    this.stats.connectionsOpen++;
    return key;
  }

  release(key: string): void {
    this.stats.connectionsOpen--;
    if (key === '') return;
    const n = (this.peers.get(key) ?? 1) - 1;
    if (n > 0) this.peers.set(key, n);
    else this.peers.delete(key);
  }
}

/** The log line for a refused connection (one kind per adapter, throttled by the caller). */
export function refusalMessage(why: Refusal, limits: ConnectionLimits): string {
  return why === 'listener-full'
    ? `connection refused: the listener holds its maximum of ${limits.maxConnections} connections`
    : `connection refused: this peer holds its maximum of ${limits.maxConnectionsPerPeer} connections`;
}
