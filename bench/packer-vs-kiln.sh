#!/usr/bin/env bash
# Packer 1.6.6 vs kiln: build the same Debian 12 base image with the same inline shell step
# (`sudo apt-get update && sudo apt-get install -y jq`) with both tools, one after the other, and
# print both wall times and their ratio; then time qemu-img compressing the same output image
# with zlib and with zstd. See bench/README.md.
#
# Usage: bash bench/packer-vs-kiln.sh
#   KILN_BENCH_BASE=PATH     base qcow2 (default ~/.cache/kiln/debian-12.qcow2, made by
#                            daemon/assets/bootstrap-debian.sh bookworm OUT)
#   KILN_BENCH_ACCEL=kvm     give Packer KVM (default tcg; kiln detects KVM by itself)
#   KILN_BENCH_KEEP=1        keep the work directory (logs, images) instead of removing it
#   KILN_BENCH_TIMEOUT=SECS  per-build limit (default 3600)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BASE=${KILN_BENCH_BASE:-$HOME/.cache/kiln/debian-12.qcow2}
ACCEL=${KILN_BENCH_ACCEL:-tcg}
LIMIT=${KILN_BENCH_TIMEOUT:-3600}
CPUS=2
MEMORY_MB=2048
STEP_1='sudo apt-get update'
STEP_2='sudo apt-get install -y jq'

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'packer-vs-kiln: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
mib() { awk -v n="$1" 'BEGIN { printf "%.1f MiB", n / 1048576 }'; }

case $ACCEL in kvm | tcg) ;; *) die "KILN_BENCH_ACCEL must be kvm or tcg, not $ACCEL" ;; esac
[[ -f $BASE ]] || die "no base image at $BASE (build it: bash daemon/assets/bootstrap-debian.sh bookworm $BASE)"
BASE=$(realpath "$BASE")

# ---- tools -----------------------------------------------------------------------------------
missing=()
command -v packer >/dev/null || missing+=(packer)
command -v genisoimage >/dev/null || missing+=(genisoimage)
command -v qemu-img >/dev/null || missing+=(qemu-utils)
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
command -v ssh-keygen >/dev/null || missing+=(openssh-client)
command -v jq >/dev/null || missing+=(jq)
if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    SUDO=
    ((EUID == 0)) || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
packer_version=$(packer version | head -n1)
[[ $packer_version == *1.6.6* ]] || say "warning: expected Packer 1.6.6, found: $packer_version"

say "cargo build --release --bins"
(cd "$REPO" && cargo build --release --bins)
KILN=$REPO/target/release/kiln
KILND=$REPO/target/release/kilnd

# ---- work directory and cleanup --------------------------------------------------------------
WORK=$(mktemp -d /tmp/kiln-bench.XXXXXX)
chmod 700 "$WORK"
KILND_PID=
PACKER_PID=

# qemu processes started for this run (by kiln or Packer) name a path under $WORK.
our_qemus() {
    local p
    for p in /proc/[0-9]*; do
        [[ $(cat "$p/comm" 2>/dev/null) == qemu-system-* ]] || continue
        tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -qF "$WORK/" && echo "${p#/proc/}"
    done
    return 0
}

stop_pid() { # PID SIGNAL SECONDS: signal, wait up to SECONDS, then SIGKILL
    local pid=$1 sig=$2 n=$(($3 * 10))
    kill -0 "$pid" 2>/dev/null || return 0
    kill "-$sig" "$pid" 2>/dev/null || return 0
    while ((n-- > 0)) && kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    [[ -n $PACKER_PID ]] && stop_pid "$PACKER_PID" INT 30 # Packer stops its qemu on SIGINT
    [[ -n $KILND_PID ]] && stop_pid "$KILND_PID" TERM 15
    for pid in $(our_qemus); do stop_pid "$pid" TERM 5; done
    if [[ ${KILN_BENCH_KEEP:-} == 1 ]]; then
        say "kept $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- what else is running --------------------------------------------------------------------
others=$(ps -eo pid=,etime=,comm= | awk '$3 ~ /^qemu-system|^cargo$|^rustc$|^packer$|^kilnd$/ { printf " %s(pid %s, up %s)", $3, $1, $2 }')
say "before start: load average $(cut -d' ' -f1-3 /proc/loadavg); other qemu/cargo/rustc/packer/kilnd:${others:- none}"

# ---- kiln ------------------------------------------------------------------------------------
export KILN_SOCKET=$WORK/kiln.sock
: >"$WORK/kilnd.toml"
"$KILND" --socket "$KILN_SOCKET" --data-dir "$WORK/data" --config "$WORK/kilnd.toml" \
    >"$WORK/kilnd.log" 2>&1 &
KILND_PID=$!
for _ in $(seq 150); do
    "$KILN" daemon status >/dev/null 2>&1 && break
    kill -0 "$KILND_PID" 2>/dev/null || die "kilnd exited: $(tail -n5 "$WORK/kilnd.log")"
    sleep 0.2
done
"$KILN" daemon status >/dev/null || die "kilnd did not answer on $KILN_SOCKET"

say "kiln image import $BASE (not timed; no saved VM yet)"
"$KILN" image import "$BASE" --name debian-12 --os debian-12 --public >/dev/null

cat >"$WORK/bench.toml" <<EOF
name = "packer-bench"
os = "debian-12"

[source]
image = "debian-12"

[vm]
cpus = $CPUS
memory_mb = $MEMORY_MB

[[customize]]
type = "shell"
name = "jq"
inline = ["$STEP_1", "$STEP_2"]

[[distribute]]
type = "image"
run_output_name = "local"
EOF
"$KILN" template create -f "$WORK/bench.toml" >/dev/null

# kiln_build NAME: one timed build; sets <NAME>_S, <NAME>_OK, kiln_accel.
kiln_build() {
    local name=$1 t0 t1 ok build id
    say "kiln build start packer-bench --image-name $name -f (log: $WORK/kiln-$name.log)"
    t0=$(now)
    if timeout "$LIMIT" "$KILN" build start packer-bench --image-name "$name" -f >"$WORK/kiln-$name.log" 2>&1; then
        ok=1
    else
        ok=0
    fi
    t1=$(now)
    printf -v "${name}_S" '%s' "$(secs "$t0" "$t1")"
    printf -v "${name}_OK" '%s' "$ok"
    build=$("$KILN" build list --json 2>/dev/null | jq -c '.builds[-1]' 2>/dev/null || true)
    id=$(jq -r '.id // empty' <<<"${build:-null}" 2>/dev/null || true)
    kiln_accel=$(jq -r '.accel // empty' <<<"${build:-null}" 2>/dev/null || true)
    kiln_accel=${kiln_accel:-?}
    if ((ok)); then
        say "kiln ($name): succeeded in $(secs "$t0" "$t1") s ($kiln_accel)"
    else
        say "kiln ($name): FAILED after $(secs "$t0" "$t1") s; last log lines:"
        tail -n 20 "$WORK/kiln-$name.log" >&2
    fi
    if [[ -n $id ]]; then
        "$KILN" build show "$id" >"$WORK/kiln-$name-show.txt" 2>&1 || true
        sed 's/^/      /' "$WORK/kiln-$name-show.txt" >&2
    fi
}

cold_S='' cold_OK=0 bench_S='' bench_OK=0
# 1. A cold build: the base boots from scratch (what every build did before warm start, and
#    what a build does whose base has no saved VM).
kiln_build cold
# 2. Save a booted VM of the base once (bootstrap and import do this by default; timed and
#    reported separately, it is paid once per base image, not per build).
say "kiln image warm debian-12 (once per base image)"
t0=$(now)
if "$KILN" image warm debian-12 >"$WORK/kiln-warm.log" 2>&1; then warm_ok=1; else warm_ok=0; fi
t1=$(now)
WARM_S=$(secs "$t0" "$t1")
((warm_ok)) || { say "kiln image warm FAILED:"; tail -n 20 "$WORK/kiln-warm.log" >&2; }
# 3. The same build again, now resuming the saved VM: the headline figure.
kiln_build bench
KILN_S=$bench_S
kiln_ok=$bench_OK
KILN_IMAGE=$("$KILN" image show bench --json 2>/dev/null | jq -r '.. | objects | .path? // empty' | head -n1 || true)
# Stop kilnd before Packer runs so it holds no CPU.
stop_pid "$KILND_PID" TERM 15
KILND_PID=

# ---- Packer ----------------------------------------------------------------------------------
mkdir -p "$WORK/packer/seed"
ssh-keygen -q -t ed25519 -N '' -C packer-bench -f "$WORK/packer/id_ed25519"
pubkey=$(cat "$WORK/packer/id_ed25519.pub")
# Same keys/host-key policy as kiln's seed (daemon/src/driver/seed.rs), minus host-key pinning:
# only an ed25519 host key, so neither tool pays for RSA key generation under TCG.
cat >"$WORK/packer/seed/user-data" <<EOF
#cloud-config
ssh_authorized_keys:
  - $pubkey
ssh_pwauth: false
manage_etc_hosts: localhost
ssh_deletekeys: true
ssh_genkeytypes: [ed25519]
EOF
printf 'instance-id: packer-bench-%s\nlocal-hostname: packer-bench\n' "$(date +%s)" \
    >"$WORK/packer/seed/meta-data"

cpu_arg=
[[ $ACCEL == kvm ]] && cpu_arg=', ["-cpu", "host"]'
cat >"$WORK/packer/bench.json" <<EOF
{
  "builders": [{
    "type": "qemu",
    "disk_image": true,
    "iso_url": "file://$BASE",
    "iso_checksum": "none",
    "format": "qcow2",
    "disk_size": "$(($(qemu-img info --output=json "$BASE" | jq '."virtual-size"') / 1048576))M",
    "skip_resize_disk": true,
    "accelerator": "$ACCEL",
    "headless": true,
    "cpus": $CPUS,
    "memory": $MEMORY_MB,
    "net_device": "virtio-net",
    "disk_interface": "virtio",
    "cd_files": ["$WORK/packer/seed/user-data", "$WORK/packer/seed/meta-data"],
    "cd_label": "cidata",
    "qemuargs": [["-serial", "file:$WORK/packer/serial.log"]$cpu_arg],
    "communicator": "ssh",
    "ssh_username": "debian",
    "ssh_private_key_file": "$WORK/packer/id_ed25519",
    "ssh_timeout": "30m",
    "shutdown_command": "sudo shutdown -P now",
    "output_directory": "$WORK/packer/output",
    "vm_name": "bench.qcow2"
  }],
  "provisioners": [{
    "type": "shell",
    "inline": ["$STEP_1", "$STEP_2"]
  }]
}
EOF
export CHECKPOINT_DISABLE=1 PACKER_CACHE_DIR=$WORK/packer/cache PACKER_LOG=1 \
    PACKER_LOG_PATH=$WORK/packer/packer-debug.log TMPDIR=$WORK/packer
packer validate "$WORK/packer/bench.json" >"$WORK/packer/validate.log" 2>&1 ||
    die "packer validate failed: $(cat "$WORK/packer/validate.log")"

say "packer build ($ACCEL; log: $WORK/packer/build.log)"
t0=$(now)
(cd "$WORK/packer" && exec timeout -s INT "$LIMIT" packer build -color=false -timestamp-ui bench.json) \
    >"$WORK/packer/build.log" 2>&1 &
PACKER_PID=$!
if wait "$PACKER_PID"; then packer_ok=1; else packer_ok=0; fi
PACKER_PID=
t1=$(now)
PACKER_S=$(secs "$t0" "$t1")
PACKER_IMAGE=$WORK/packer/output/bench.qcow2
if ((packer_ok)) && [[ -f $PACKER_IMAGE ]]; then
    say "packer: succeeded in $PACKER_S s"
    grep -E '==> qemu: (Starting VM|Waiting for SSH|Connected to SSH|Provisioning with shell|Gracefully halting|Converting hard drive)' \
        "$WORK/packer/build.log" | sed 's/^/      /' >&2 || true
else
    packer_ok=0
    say "packer: FAILED after $PACKER_S s; last log lines:"
    tail -n 20 "$WORK/packer/build.log" >&2
    grep -m3 -iE 'error|qemu stderr' "$WORK/packer/packer-debug.log" >&2 || true
fi

# ---- compression -----------------------------------------------------------------------------
if ((packer_ok)); then
    SRC=$PACKER_IMAGE SRC_WHAT="Packer's output (compacted, uncompressed)"
elif ((kiln_ok)) && [[ -n $KILN_IMAGE && -f $KILN_IMAGE ]]; then
    SRC=$KILN_IMAGE SRC_WHAT="kiln's catalog image (zstd qcow2)"
else
    SRC=$BASE SRC_WHAT="the base image (both builds failed)"
fi
say "compressing $SRC_WHAT: $(mib "$(stat -c %s "$SRC")")"
declare -A CT CS
for alg in zlib zstd; do
    out=$WORK/compress-$alg.qcow2
    t0=$(now)
    qemu-img convert -O qcow2 -c -o "compression_type=$alg" "$SRC" "$out"
    t1=$(now)
    CT[$alg]=$(secs "$t0" "$t1")
    CS[$alg]=$(stat -c %s "$out")
    rm -f "$out"
done

# ---- table -----------------------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
mark() { (($1)) && echo "" || echo "  (FAILED)"; }
echo
echo "packer-vs-kiln  base=$(basename "$BASE")  cpus=$CPUS memory=${MEMORY_MB}MB  packer accel=$ACCEL  kiln accel=$kiln_accel"
printf 'kiln    %6s s%s  (warm start: resumes the base'"'"'s saved VM)\n' "$KILN_S" "$(mark "$kiln_ok")"
printf 'packer  %6s s%s\n' "$PACKER_S" "$(mark "$packer_ok")"
printf 'ratio kiln/packer %s\n' "$(ratio "$KILN_S" "$PACKER_S")"
printf 'kiln cold %6s s%s  (no saved VM: boots the base, waits for cloud-init)\n' "$cold_S" "$(mark "$cold_OK")"
printf 'ratio kiln cold/packer %s\n' "$(ratio "$cold_S" "$PACKER_S")"
printf 'kiln image warm %6s s%s  (once per base image)\n' "$WARM_S" "$(mark "$warm_ok")"
printf 'ratio (kiln + warm)/packer %s  (the first build of a new base)\n' \
    "$(ratio "$(awk -v a="$KILN_S" -v b="$WARM_S" 'BEGIN { print a + b }')" "$PACKER_S")"
printf 'zlib    %6s s %s\n' "${CT[zlib]}" "$(mib "${CS[zlib]}")"
printf 'zstd    %6s s %s\n' "${CT[zstd]}" "$(mib "${CS[zstd]}")"
if ((packer_ok)); then
    printf 'packer+zstd %6s s  (Packer plus a zstd pass, an artifact like kiln'"'"'s)\n' \
        "$(awk -v a="$PACKER_S" -v b="${CT[zstd]}" 'BEGIN { printf "%.1f", a + b }')"
    printf 'ratio kiln/(packer+zstd) %s\n' \
        "$(ratio "$KILN_S" "$(awk -v a="$PACKER_S" -v b="${CT[zstd]}" 'BEGIN { print a + b }')")"
fi
echo "compressed: $SRC_WHAT; load average now $(cut -d' ' -f1-3 /proc/loadavg)"
((kiln_ok && cold_OK && warm_ok && packer_ok))
