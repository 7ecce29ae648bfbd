# shellcheck shell=bash
# Postfix: SMTP relay on 127.0.0.1:1025 (no auth, loopback clients only) and
# submission with SASL auth (through Dovecot) on 127.0.0.1:1587. Mail for
# example.test and load.test is delivered into Dovecot over LMTP; any other
# domain is refused, so nothing ever leaves the machine.
# Depends on the dovecot service (LMTP and auth).

POSTFIX_DIR="$STACK_DIR/postfix"
POSTFIX_SMTP_PORT=1025
POSTFIX_SUBMISSION_PORT=1587

postfix_install() {
  apt_install postfix
}

_postfix_configure() {
  mkdir -p "$POSTFIX_DIR"
  local dovecot_lmtp=1024 dovecot_auth=1026
  postconf -e \
    "myhostname = mx.example.test" \
    "mydomain = example.test" \
    "myorigin = example.test" \
    "mydestination = localhost" \
    "inet_interfaces = 127.0.0.1" \
    "inet_protocols = ipv4" \
    "mynetworks = 127.0.0.0/8" \
    "relayhost =" \
    "virtual_mailbox_domains = example.test load.test" \
    "virtual_transport = lmtp:inet:127.0.0.1:$dovecot_lmtp" \
    "default_transport = error:outbound mail is disabled in the opush test stack" \
    "relay_transport = error:outbound mail is disabled in the opush test stack" \
    "smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination" \
    "smtpd_recipient_restrictions = reject_unlisted_recipient" \
    "smtpd_sasl_type = dovecot" \
    "smtpd_sasl_path = inet:127.0.0.1:$dovecot_auth" \
    "smtpd_tls_security_level = none" \
    "smtp_tls_security_level = none" \
    "smtpd_tls_auth_only = no" \
    "message_size_limit = 52428800" \
    "compatibility_level = 3.6" \
    "maillog_file_prefixes = /var, /dev/stdout, $STACK_DIR" \
    "maillog_file = $POSTFIX_DIR/maillog" \
    "biff = no" \
    "alias_maps =" "alias_database ="
  # Services: no port 25; our relay and submission ports on loopback.
  postconf -X -M smtp/inet 2>/dev/null || true
  postconf -M "127.0.0.1:$POSTFIX_SMTP_PORT/inet=127.0.0.1:$POSTFIX_SMTP_PORT inet n - n - - smtpd"
  postconf -M "127.0.0.1:$POSTFIX_SUBMISSION_PORT/inet=127.0.0.1:$POSTFIX_SUBMISSION_PORT inet n - n - - smtpd -o smtpd_sasl_auth_enable=yes -o smtpd_relay_restrictions=permit_sasl_authenticated,reject -o smtpd_client_restrictions=permit_sasl_authenticated,reject"
  postconf -M "postlog/unix-dgram=postlog unix-dgram n - n - 1 postlogd"
  # Unknown local recipients in virtual domains: Dovecot answers over LMTP.
  postconf -e "smtpd_reject_unlisted_recipient = no"
  newaliases 2>/dev/null || true
}

postfix_up() {
  port_open 127.0.0.1 1024 || die "postfix needs dovecot (LMTP): run scripts/stack up dovecot postfix"
  _postfix_configure
  postfix check >/dev/null 2>&1 || true
  if postfix status >/dev/null 2>&1; then postfix reload >/dev/null 2>&1; else postfix start >/dev/null 2>&1 || die "postfix start failed"; fi
  wait_port 127.0.0.1 $POSTFIX_SMTP_PORT 30 || die "postfix did not open port $POSTFIX_SMTP_PORT"
  wait_port 127.0.0.1 $POSTFIX_SUBMISSION_PORT 30 || die "postfix did not open port $POSTFIX_SUBMISSION_PORT"
}

postfix_down() {
  postfix stop >/dev/null 2>&1 || true
}

postfix_status() {
  postfix status >/dev/null 2>&1 || return 1
  port_open 127.0.0.1 $POSTFIX_SMTP_PORT && port_open 127.0.0.1 $POSTFIX_SUBMISSION_PORT || return 1
  local banner
  banner=$(timeout 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/$POSTFIX_SMTP_PORT; IFS= read -r line <&3; echo \"\$line\"" 2>/dev/null) || true
  [[ "$banner" == 220* ]]
}
