#!/bin/sh
# Writes the users and each user's welcome message, then runs Dovecot in the
# foreground. BACKEND_NAME names the server (a StatefulSet pod passes its own
# name through the downward API).
set -eu
name=${BACKEND_NAME:-$(hostname)}
users="alice bob carol dave erin"
i=0
while [ "$i" -lt 64 ]; do
	users="$users $(printf 'user%02d' "$i")"
	i=$((i + 1))
done
: >/etc/dovecot/users
for u in $users; do
	echo "$u@example.com:{PLAIN}pw-$u" >>/etc/dovecot/users
	md=/srv/mail/$u@example.com/Maildir
	mkdir -p "$md/new" "$md/cur" "$md/tmp"
	printf 'From: e2e@example.com\r\nTo: %s@example.com\r\nSubject: Welcome to the %s server\r\n\r\nHello.\r\n' \
		"$u" "$name" >"$md/new/1.welcome.$name"
done
chown -R vmail:vmail /srv/mail
chmod 0644 /etc/dovecot/users
exec dovecot -F
