/*
 * Test helper for Dovecot's auth policy requests: one login attempt's JSON
 * body, with the fields Dovecot 2.3 sends (test/fixtures/protocol captures).
 */
export const attempt = (ip: string, login: string, pwhash: string, protocol = 'imap') => ({
  device_id: '',
  login,
  protocol,
  pwhash,
  remote: ip,
  session_id: 'AAAAAAAAAAAAAAAA',
  tls: false,
});
