#!/usr/bin/env bash
# boot-test.sh BASE.qcow2 [WORKDIR]
#
# Prototype of the kiln QEMU driver's prepare/boot/connect/shutdown sequence:
#   overlay on BASE (never a copy), per-boot ed25519 client key + ed25519 host key,
#   NoCloud seed (iso9660, label cidata) installing both, QEMU with serial log + QMP +
#   user net (SSH forward on 127.0.0.1 only), KVM first with fallback to TCG, SSH polled
#   every 250 ms with the pinned host key, `cloud-init status --wait`, `sudo apt-get update`,
#   QMP system_powerdown, time to QEMU exit. Prints a timing for every phase.
# Env: KILN_ACCEL=auto|kvm|tcg (default auto), KILN_PORT (default: a free port), KILN_MEM=2048,
#      KILN_CPUS=2, KILN_DISK=20G, KILN_KVM_PROBE_SECS=10, KILN_BOOT_TIMEOUT=600, KILN_KEEP=1 keeps WORK,
#      KILN_GENERALIZE=OUT.qcow2 deprovisions the guest before shutdown and keeps the overlay as OUT.
set -euo pipefail

[[ $# -ge 1 && $# -le 2 ]] || { echo "usage: $0 BASE.qcow2 [WORKDIR]" >&2; exit 2; }
BASE=$(readlink -f "$1"); WORKDIR=${2:-${TMPDIR:-/var/tmp}}
ACCEL=${KILN_ACCEL:-auto} MEM=${KILN_MEM:-2048} CPUS=${KILN_CPUS:-2} DISK=${KILN_DISK:-20G}
PROBE_SECS=${KILN_KVM_PROBE_SECS:-10} BOOT_TIMEOUT=${KILN_BOOT_TIMEOUT:-600}
PORT=${KILN_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}

now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc | xargs printf '%.2f'; }
T0=$(now)
WORK=$(mktemp -d "$WORKDIR/kiln-boot.XXXXXX")
QPID=
cleanup() {
    if [[ -n $QPID ]] && kill -0 "$QPID" 2>/dev/null; then kill "$QPID"; wait "$QPID" 2>/dev/null || true; fi
    if [[ ${KILN_KEEP:-0} == 1 ]]; then echo "==> kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# ------------------------------------------------------------------ prepare
echo "==> prepare (overlay, keys, seed) in $WORK"
t=$(now)
qemu-img create -q -f qcow2 -F qcow2 -b "$BASE" "$WORK/overlay.qcow2" "$DISK"
ssh-keygen -q -t ed25519 -N '' -C kiln-client -f "$WORK/client_key"
ssh-keygen -q -t ed25519 -N '' -C '' -f "$WORK/host_key"
echo "[127.0.0.1]:$PORT $(cut -d' ' -f1,2 "$WORK/host_key.pub")" > "$WORK/known_hosts"
IID="kiln-$(cat /proc/sys/kernel/random/uuid)"
mkdir "$WORK/seed"
printf 'instance-id: %s\nlocal-hostname: kiln-build\n' "$IID" > "$WORK/seed/meta-data"
{
    echo '#cloud-config'
    echo 'ssh_authorized_keys:'
    echo "  - $(cat "$WORK/client_key.pub")"
    echo 'ssh_pwauth: false'
    echo 'manage_etc_hosts: localhost'  # else sudo warns "unable to resolve host kiln-build"
    echo 'ssh_deletekeys: true'
    echo 'ssh_genkeytypes: []'          # no RSA/ECDSA generation (slow under TCG, not needed)
    echo 'ssh_keys:'
    echo '  ed25519_private: |'
    sed 's/^/    /' "$WORK/host_key"
    echo "  ed25519_public: $(cat "$WORK/host_key.pub")"
} > "$WORK/seed/user-data"
genisoimage -quiet -output "$WORK/seed.iso" -volid cidata -joliet -rock "$WORK/seed/user-data" "$WORK/seed/meta-data"
echo "    prepare: $(since "$t")s"

# ------------------------------------------------------------------ boot
qmp() {  # qmp '{"execute":...}' -> prints the replies
    printf '{"execute":"qmp_capabilities"}\n%s\n' "$1" | socat -t2 - "UNIX-CONNECT:$WORK/qmp.sock" 2>/dev/null | tail -n +3
}
start_qemu() {  # $1 = kvm|tcg
    local accel=(-accel tcg) ; [[ $1 == kvm ]] && accel=(-accel kvm -cpu host)
    rm -f "$WORK/qmp.sock" "$WORK/serial.log"
    QEMU_CMD=(qemu-system-x86_64 "${accel[@]}" -machine pc -smp "$CPUS" -m "$MEM"
        -nodefaults -display none -no-user-config
        -serial "file:$WORK/serial.log"
        -qmp "unix:$WORK/qmp.sock,server=on,wait=off"
        -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$PORT-:22" -device virtio-net-pci,netdev=n0
        -drive "file=$WORK/overlay.qcow2,if=virtio,format=qcow2,discard=unmap"
        -drive "file=$WORK/seed.iso,if=virtio,format=raw,readonly=on")
    "${QEMU_CMD[@]}" 2> "$WORK/qemu.stderr" &
    QPID=$!
    TBOOT=$(now)
}
# KVM probe: /dev/kvm may open and KVM_CREATE_VM succeed while the guest then hangs or dies
# ("KVM internal error"). So: start with KVM and require the kernel banner on the serial console
# within PROBE_SECS (under working KVM it appears in ~1-2 s); QEMU exit or QMP status
# internal-error also means failure. On failure, kill and restart under TCG.
kvm_works() {
    local deadline; deadline=$(echo "$(now) + $PROBE_SECS" | bc)
    while (( $(echo "$(now) < $deadline" | bc) )); do
        if ! kill -0 "$QPID" 2>/dev/null; then
            wait "$QPID"; echo "    kvm: qemu exited rc=$? after $(since "$TBOOT")s: $(tail -c 300 "$WORK/qemu.stderr")"; QPID=; return 1
        fi
        if grep -aq 'Linux version' "$WORK/serial.log" 2>/dev/null; then return 0; fi
        if qmp '{"execute":"query-status"}' | grep -q internal-error; then
            echo "    kvm: QMP status internal-error after $(since "$TBOOT")s"; return 1
        fi
        sleep 0.25
    done
    echo "    kvm: no kernel banner on serial within ${PROBE_SECS}s (status: $(qmp '{"execute":"query-status"}' | grep -o '"status": "[a-z-]*"'))"
    return 1
}

USED=tcg
if [[ $ACCEL != tcg && -r /dev/kvm && -w /dev/kvm ]]; then
    echo "==> boot (trying KVM)"
    start_qemu kvm
    if kvm_works; then USED=kvm
    else
        [[ $ACCEL == kvm ]] && { echo "KVM required but not working" >&2; exit 1; }
        if [[ -n $QPID ]]; then kill "$QPID"; wait "$QPID" 2>/dev/null || true; QPID=; fi
        echo "    KVM unusable, falling back to TCG (probe cost $(since "$TBOOT")s)"
    fi
fi
[[ $USED == tcg ]] && { echo "==> boot (TCG)"; start_qemu tcg; }
echo "    accel=$USED pid=$QPID port=$PORT"
printf '    qemu:'; printf ' %q' "${QEMU_CMD[@]}"; echo

# ------------------------------------------------------------------ connect
SSH=(ssh -q -i "$WORK/client_key" -p "$PORT" -o BatchMode=yes -o ConnectTimeout=3
     -o StrictHostKeyChecking=yes -o "UserKnownHostsFile=$WORK/known_hosts" -o GlobalKnownHostsFile=/dev/null
     -o LogLevel=ERROR debian@127.0.0.1)
declare -A SEEN=()
MILESTONES=("grub|Booting \`" "kernel|Linux version" "systemd|systemd\[1\]: Detected virtualization"
            "root-fs|EXT4-fs \(vda1\): mounted" "cloud-init-local|running 'init-local'"
            "cloud-init-net|running 'init' at" "sshd|Started ssh.service" "login-prompt|login:"
            "cloud-final|running 'modules:final'")
milestones() {
    local m name pat
    for m in "${MILESTONES[@]}"; do
        name=${m%%|*} pat=${m#*|}
        [[ -n ${SEEN[$name]:-} ]] && continue
        if grep -aqE "$pat" "$WORK/serial.log" 2>/dev/null; then SEEN[$name]=1; echo "    serial: $name at +$(since "$TBOOT")s"; fi
    done
}
echo "==> connect (SSH poll every 250 ms, pinned host key)"
tries=0 lasterr=
while :; do
    milestones
    kill -0 "$QPID" 2>/dev/null || { echo "qemu died: $(cat "$WORK/qemu.stderr")" >&2; exit 1; }
    (( $(echo "$(since "$TBOOT") > $BOOT_TIMEOUT" | bc) )) && { echo "SSH not up after ${BOOT_TIMEOUT}s; last error: $lasterr" >&2; tail -20 "$WORK/serial.log" >&2; exit 1; }
    tries=$((tries+1))
    if err=$(timeout 10 "${SSH[@]}" true 2>&1); then break; fi
    if grep -q "verification failed\|REMOTE HOST IDENTIFICATION" <<<"$err"; then
        echo "host key mismatch: $err" >&2; exit 1
    fi
    lasterr=$err
    sleep 0.25
done
T_SSH=$(since "$TBOOT")
echo "    ssh up at +${T_SSH}s after boot start ($tries attempts; pinned host key verified)"

echo "==> cloud-init status --wait"
t=$(now)
rc=0; out=$("${SSH[@]}" cloud-init status --wait --long 2>&1) || rc=$?
milestones
echo "$out" | sed 's/^/    | /'
case $rc in 0) meaning="done, no errors";; 1) meaning="error (unrecoverable)";; 2) meaning="done with recoverable errors (degraded)";; *) meaning="unknown";; esac
echo "    cloud-init exit=$rc ($meaning) after +$(since "$t")s; ready at +$(since "$TBOOT")s after boot start"

echo "==> checks"
"${SSH[@]}" 'echo "    kernel: $(uname -r)  root: $(findmnt -no SIZE /)  host keys: $(ls /etc/ssh/ssh_host_* | xargs -n1 basename | tr "\n" " ")"; systemd-analyze 2>/dev/null | head -1 | sed "s/^/    /"' || true
t=$(now)
if "${SSH[@]}" sudo apt-get -q update > "$WORK/apt.log" 2>&1; then
    echo "    sudo apt-get update: ok in $(since "$t")s ($(grep -c '^Get:' "$WORK/apt.log") fetched)"
else
    echo "    sudo apt-get update FAILED in $(since "$t")s:"; tail -5 "$WORK/apt.log" | sed 's/^/    | /'
fi

if [[ -n ${KILN_GENERALIZE:-} ]]; then
    # KILN_GENERALIZE=OUT.qcow2: deprovision like a build would, then keep the overlay as OUT
    # (a qcow2 whose backing file is BASE) so a second boot-test run can verify regeneration.
    echo "==> generalize"
    t=$(now)
    "${SSH[@]}" 'sudo cloud-init clean --logs --seed && sudo rm -f /etc/ssh/ssh_host_* &&
        sudo truncate -s 0 /etc/machine-id && sudo rm -f /var/lib/dbus/machine-id &&
        sudo apt-get clean && sudo rm -rf /var/lib/apt/lists/* /tmp/* /var/tmp/* &&
        sudo rm -f /home/debian/.ssh/authorized_keys && sudo fstrim -v / && sync' 2>&1 | sed 's/^/    | /'
    echo "    generalize: $(since "$t")s"
fi

echo "==> shutdown (QMP system_powerdown)"
t=$(now)
qmp '{"execute":"system_powerdown"}' > /dev/null
for _ in $(seq 1 1200); do kill -0 "$QPID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$QPID" 2>/dev/null; then
    echo "    guest did not power off in 120s; QMP quit"; qmp '{"execute":"quit"}' >/dev/null || true
fi
wait "$QPID" 2>/dev/null; qrc=$?; QPID=
echo "    qemu exited rc=$qrc after $(since "$t")s"
echo "    overlay grew to $(du -h "$WORK/overlay.qcow2" | cut -f1)"
if [[ -n ${KILN_GENERALIZE:-} ]]; then mv "$WORK/overlay.qcow2" "$KILN_GENERALIZE"; echo "    generalized overlay saved as $KILN_GENERALIZE (backing: $BASE)"; fi
echo "==> total $(since "$T0")s (accel=$USED, ssh at +${T_SSH}s)"
