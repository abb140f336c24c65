/* The store contract (contract.ts) against the embedded MemoryStore. */
import { MemoryStore } from '../../src/store/memory.js';
import { storeContract } from './contract.js';

storeContract(
  'memory',
  ({ lookbackMs, now }) => new MemoryStore({ file: ':memory:', maxKeys: 100_000, lookbackMs, now }),
);
