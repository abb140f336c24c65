/*
 * Test helper for Dovecot's auth policy requests: one login attempt's JSON
 * body, with the fields Dovecot 2.3 sends (test/fixtures/protocol captures).
 */
/** Dovecot's settings for mailwarden's policy hooks, as docs/INTEGRATION.md gives them (URL and nonce aside). */
export const POLICY_HOOKS = {
  auth_policy_request_attributes:
    'login=%{requested_username} pwhash=%{hashed_password} remote=%{rip} device_id=%{client_id} protocol=%s session_id=%{session}',
  auth_policy_check_before_auth: 'yes',
  auth_policy_check_after_auth: 'yes',
  auth_policy_report_after_auth: 'yes',
  auth_policy_reject_on_fail: 'no',
} as const;

export const attempt = (ip: string, login: string, pwhash: string, protocol = 'imap') => ({
  device_id: '',
  login,
  protocol,
  pwhash,
  remote: ip,
  session_id: 'AAAAAAAAAAAAAAAA',
  tls: false,
});
