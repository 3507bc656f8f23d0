#!/usr/bin/env bash
# Build the daemon's image from the repository's Containerfile on a machine that can pull no image.
#
# 1. The base: Debian bookworm with python3, python3-venv and ca-certificates, made by mmdebstrap
#    from the host's own apt sources (its Debian entries: no host is named here), unpacked into a
#    `buildah from scratch` container and committed as localhost/pimingestd-base:<hash>.
# 2. A wheelhouse: the locked wheels (requirements/run.txt and build.txt, hashes checked) fetched
#    by the host's pip with its own configuration, so the build itself needs no network.
# 3. The image: the same Containerfile users build with docker or podman, with BASE set to that
#    base and pip told to install from the wheelhouse only; --format docker keeps the HEALTHCHECK.
#
# Each step is keyed by a hash of its inputs and skipped when its result is already in the store,
# so a warm run only hashes files. The store (vfs, chroot isolation: no daemon, no overlayfs) is
# $PIMINGESTD_IMAGE_STORE, /var/cache/pimingestd-image by default. PIMINGESTD_IMAGE_REBUILD=1
# rebuilds both anyway (the mirror's packages move on while the sources stay the same).
#
# Needs root, buildah, mmdebstrap and python3; $PYTHON names a python with pip for the wheelhouse (the test
# passes its own, as Debian's python3 has no pip). The last line of its output is machine-readable:
#   image=<name> root=<storage root> runroot=<run root>
set -euo pipefail
cd "$(dirname "$0")/../.."

store=${PIMINGESTD_IMAGE_STORE:-/var/cache/pimingestd-image}
root=$store/storage
runroot=$store/run
bah=(buildah --root "$root" --runroot "$runroot" --storage-driver vfs)
export BUILDAH_ISOLATION=chroot
suite=bookworm
packages=python3,python3-venv,ca-certificates
mkdir -p "$store"
exec 9>"$store/lock"
flock 9  # one build at a time per store

log() { printf 'build.sh: %s\n' "$*" >&2; }
exists() { "${bah[@]}" inspect --type image "$1" >/dev/null 2>&1; }
# Remove the other tags of a repository (vfs keeps a full copy per layer: stale ones fill the disk).
prune() {
  local repo=$1 keep=$2
  "${bah[@]}" images --format '{{.Name}}:{{.Tag}}' | { grep "^$repo:" || true; } | while read -r old; do
    [ "$old" = "$keep" ] || "${bah[@]}" rmi "$old" >/dev/null 2>&1 || true
  done
}

# ---- 1. the base ----------------------------------------------------------------------------
sources=$(mktemp -d)
ctr=  # the base's working container while it is made; removed whatever stops the script
cleanup() {
  rm -rf "$sources"
  if [ -n "$ctr" ]; then "${bah[@]}" rm "$ctr" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT
# The host's Debian entries for the suite, as one deb822 file: apt reads /etc/apt/sources.list and
# /etc/apt/sources.list.d/*.list and *.sources; anything else there (third-party repositories whose
# keys the new system would not have, or files switched off by renaming) is left out.
python3 - "$suite" >"$sources/debian.sources" <<'PY'
import glob, sys
suite = sys.argv[1]
wanted = {suite, f"{suite}-updates", f"{suite}-security"}
entries = []
def add(uri, suites, comps, signed):
    suites = [s for s in suites if s in wanted]
    if suites and "main" in comps and "debian" in uri:
        entries.append((uri, suites, signed))
for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]:
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except FileNotFoundError:
        continue
    for line in lines:
        words = line.split("#", 1)[0].split()
        if not words or words[0] != "deb":
            continue
        words = words[1:]
        signed = ""
        if words and words[0].startswith("["):
            opts = []
            while words:
                w = words.pop(0)
                opts.append(w)
                if w.endswith("]"):
                    break
            for o in " ".join(opts).strip("[] ").split():
                if o.startswith("signed-by="):
                    signed = o.split("=", 1)[1]
        if len(words) >= 3:
            add(words[0], [words[1]], words[2:], signed)
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for stanza in open(path, encoding="utf-8").read().split("\n\n"):
        fields = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[0].isspace():
                continue
            k, v = line.split(":", 1)
            fields[k.strip().lower()] = v.split()
        if "deb" not in fields.get("types", []) or fields.get("enabled", ["yes"])[0] == "no":
            continue
        for uri in fields.get("uris", []):
            add(uri, fields.get("suites", []), fields.get("components", []), " ".join(fields.get("signed-by", [])))
if not entries:
    sys.exit(f"no Debian {suite} entry with main in the host's apt sources")
for uri, suites, signed in entries:
    print(f"Types: deb\nURIs: {uri}\nSuites: {' '.join(suites)}\nComponents: main")
    if signed:
        print(f"Signed-By: {signed}")
    print()
PY
base_key=$( { echo "base v1 $suite $packages"; cat "$sources/debian.sources"; } | sha256sum | cut -c1-16)
base=localhost/pimingestd-base:$base_key
if [ "${PIMINGESTD_IMAGE_REBUILD:-0}" = 1 ] || ! exists "$base"; then
  log "building the base $base with mmdebstrap"
  start=$(date +%s)
  ctr=$("${bah[@]}" from scratch)
  mnt=$("${bah[@]}" mount "$ctr")
  # minbase, without documentation the image would carry for nothing. Into a file, in a session of its own:
  # mmdebstrap signals its whole process group when it fails, which would take the caller with it.
  tarball=$store/base.tar
  if ! setsid --wait mmdebstrap --quiet --variant=minbase --format=tar --include="$packages" \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    "$suite" "$tarball" "$sources/debian.sources" </dev/null; then
    log "mmdebstrap failed"
    exit 1
  fi
  tar -x --numeric-owner -C "$mnt" -f "$tarball"
  rm -f "$tarball"
  "${bah[@]}" umount "$ctr" >/dev/null
  "${bah[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd /bin/bash --label "org.opencontainers.image.description=Debian $suite with $packages" "$ctr"
  "${bah[@]}" commit --quiet --rm "$ctr" "$base" >/dev/null
  ctr=
  prune localhost/pimingestd-base "$base"
  log "base built in $(($(date +%s) - start)) s"
fi

# ---- 2. the wheelhouse ----------------------------------------------------------------------
wheel_key=$(cat requirements/run.txt requirements/build.txt | sha256sum | cut -c1-16)
wheels=$store/wheels/$wheel_key
if [ ! -f "$wheels/.complete" ]; then
  log "fetching the locked wheels into $wheels"
  rm -rf "$store/wheels"
  mkdir -p "$wheels"
  # Binary wheels only: a wheel built here would not match the lock's hashes in the image.
  "${PYTHON:-python3}" -m pip download --quiet --require-hashes --only-binary=:all: --no-deps \
    -r requirements/run.txt -r requirements/build.txt -d "$wheels" \
    2> >(grep -v "^WARNING: Location '.*' is ignored" >&2)
  touch "$wheels/.complete"
fi

# ---- 3. the image ---------------------------------------------------------------------------
# The key covers what the Containerfile copies (the package, its metadata files and the locks), the
# Containerfile and its ignore file, and the base's id.
image_key=$( {
  "${bah[@]}" inspect --type image --format '{{.FromImageID}}' "$base"
  git ls-files --cached --others --exclude-standard -- Containerfile .containerignore .dockerignore \
    pyproject.toml README.md LICENSE requirements pimingestd | LC_ALL=C sort | while read -r f; do
    [ -f "$f" ] && printf '%s ' "$f" && sha256sum <"$f"
  done
} | sha256sum | cut -c1-16)
image=localhost/pimingestd:$image_key
if [ "${PIMINGESTD_IMAGE_REBUILD:-0}" = 1 ] || ! exists "$image"; then
  log "building $image from the Containerfile"
  start=$(date +%s)
  "${bah[@]}" build --quiet --pull=never --format docker --isolation chroot --layers=false \
    --build-arg BASE="$base" --build-arg PIP_NO_INDEX=1 --build-arg PIP_FIND_LINKS=/wheels \
    --volume "$wheels:/wheels:ro" -f Containerfile -t "$image" . >/dev/null
  prune localhost/pimingestd "$image"
  log "image built in $(($(date +%s) - start)) s"
fi
log "$image: $("${bah[@]}" images --noheading --format '{{.Size}}' "$image")"
echo "image=$image root=$root runroot=$runroot"
