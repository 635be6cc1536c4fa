#!/bin/bash
# Removes from a guest every SSH key kiln installed, wherever it ended up, and every SSH host key.
# Run as root at generalize: `bash remove-kiln-keys.sh BLOB...`, each BLOB the base64 part of a
# public key kiln put into this guest (the build's key; with warm start, the saved VM's key too).
#
# cloud-init copies the default user's keys to root's authorized_keys behind its `disable_root`
# wrapper, and a customize step may have copied them anywhere, so this looks at every file sshd
# could read keys from: every `authorized_keys*` file on the root file system, and each
# AuthorizedKeysFile pattern of sshd_config expanded for every user in /etc/passwd. A line holding
# one of the blobs, or a key with kiln's comment `kiln-build`, goes; a file left without keys goes.
# cloud-init's cached copies of the seed (user-data with the host private key) go too.
# KILN_ROOT=DIR works on a tree at DIR instead of / (tests).
set -euo pipefail
shopt -s nullglob
set -f
root=${KILN_ROOT:-}
keys=$(mktemp)
trap 'rm -f "$keys"' EXIT
for blob in "$@"; do printf '%s\n' "$blob"; done >"$keys"

kiln_line() { grep -qF -f "$keys" "$1" || grep -qE '[[:space:]]kiln-build[[:space:]]*$' "$1"; }

set +f
configs=("$root"/etc/ssh/sshd_config "$root"/etc/ssh/sshd_config.d/*.conf)
set -f
patterns=".ssh/authorized_keys .ssh/authorized_keys2"
if [ ${#configs[@]} -gt 0 ]; then
  patterns+=" $(cat "${configs[@]}" 2>/dev/null |
    awk 'tolower($1)=="authorizedkeysfile" { for (i = 2; i <= NF; i++) print $i }' | tr '\n' ' ')"
fi

candidates() {
  find "$root"/ -xdev \( -path "$root/proc" -o -path "$root/sys" -o -path "$root/dev" \
    -o -path "$root/run" \) -prune -o -type f -name 'authorized_keys*' -print
  while IFS=: read -r user _ uid _ _ home _; do
    [ -n "$home" ] || continue
    for p in $patterns; do
      f=${p//%%/$'\001'}
      f=${f//%h/$home}
      f=${f//%u/$user}
      f=${f//%U/$uid}
      f=${f//$'\001'/%}
      case $f in /*) ;; *) f=$home/$f ;; esac
      printf '%s\n' "$root$f"
    done
  done <"$root"/etc/passwd
}

removed=0
while IFS= read -r f; do
  [ -f "$f" ] && [ ! -L "$f" ] || continue
  kiln_line "$f" || continue
  kept=$(grep -vF -f "$keys" "$f" | grep -vE '[[:space:]]kiln-build[[:space:]]*$' || true)
  if printf '%s\n' "$kept" | grep -q '^[[:space:]]*[^#[:space:]]'; then
    # Rewritten in place: the file keeps its owner and mode.
    printf '%s\n' "$kept" >"$f"
  else
    rm -f "$f"
  fi
  echo "removed kiln's key from ${f#"$root"}"
  removed=$((removed + 1))
done < <(candidates | sort -u)

while IFS= read -r f; do
  rm -f "$f"
  echo "removed cloud-init's copy of the seed ${f#"$root"}"
done < <(grep -rlaF -e 'OPENSSH PRIVATE KEY' -f "$keys" "$root"/var/lib/cloud 2>/dev/null || true)

set +f
rm -f "$root"/etc/ssh/ssh_host_*
echo "build keys removed ($removed authorized_keys file(s) had one); host keys removed"
sync
