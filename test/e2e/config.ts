/*
 * The mailwarden config of the guessing scenarios: the built-in rules with
 * smaller numbers, so a scenario needs a handful of attempts, not dozens:
 * after 2 different wrong passwords from an address the next attempt is
 * delayed 1 s, after 3 the address is refused before the password is checked,
 * and a second different password tried after being refused bans it
 * (auth-guess-ban counts only refused attempts, `when: { refused: true }`; a
 * device retrying the password it was refused with does not add to it). The
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
    limit: 1
`;
