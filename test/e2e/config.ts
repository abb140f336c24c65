/*
 * The mailwarden config of the guessing scenarios: the built-in rules with
 * smaller numbers, so a scenario needs a handful of attempts, not dozens. The
 * stack's clients come from 127.0.0.0/8, so no network is trusted.
 */
export const GUESSING_CONFIG = `
allowlist: { networks: [] }
rules:
  - name: auth-guess-delay
    limit: 2
    then: { action: delay, delay: 1s }
  - name: auth-guess-refuse
    limit: 3
  - name: auth-guess-ban
    limit: 4
`;
