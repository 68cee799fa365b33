#!/usr/bin/env bash
# Puts LibMTL's source tree at the pinned commit in DEST (default third_party/LibMTL).
#
#   bash benchmarks/get_libmtl.sh [DEST]
#   LIBMTL_GIT=/path/to/LibMTL.git bash benchmarks/get_libmtl.sh
#
# LibMTL is the PyTorch peer that benchmarks/libmtl_step_time.py drives, unmodified, at
# run time; it is never a dependency of mtl_jax and none of its code is in this repo.
# The source is a local git repository (bare mirror or clone) given by LIBMTL_GIT; the
# tree is exported with `git archive` (no nested .git, so the folder is plain files that
# can be copied to a machine without internet), and DEST/.libmtl_commit records the full
# commit hash. DEST may also already be a git clone of LibMTL: then it is accepted as it
# is when its HEAD is the pinned commit.
#
# Refuses (exit 1) to overwrite a DEST that holds another commit or unknown contents.
set -euo pipefail

COMMIT=4336804
MARKER=.libmtl_commit
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:-$repo_root/third_party/LibMTL}"
src="${LIBMTL_GIT:-/work/.mirror/median-research-group+LibMTL/repo}"

die() {
  echo "get_libmtl: $*" >&2
  exit 1
}

# A DEST that is itself the top of a git work tree (an already-cloned LibMTL).
if [ -d "$dest" ] && [ "$(git -C "$dest" rev-parse --show-toplevel 2>/dev/null)" = "$(cd "$dest" && pwd -P)" ]; then
  head="$(git -C "$dest" rev-parse HEAD)"
  case "$head" in
    "$COMMIT"*) echo "get_libmtl: $dest is already a clone at $head; nothing to do"; exit 0 ;;
    *) die "$dest is a git clone at $head, not $COMMIT; refusing to touch it" ;;
  esac
fi

if [ -e "$dest" ]; then
  if [ -f "$dest/$MARKER" ]; then
    have="$(cat "$dest/$MARKER")"
    case "$have" in
      "$COMMIT"*) echo "get_libmtl: $dest already holds LibMTL $have; nothing to do"; exit 0 ;;
      *) die "$dest holds LibMTL $have, not $COMMIT; remove it first to replace it" ;;
    esac
  fi
  if [ -n "$(ls -A "$dest")" ]; then
    die "$dest exists, is not empty and has no $MARKER; refusing to overwrite it"
  fi
fi

git -C "$src" rev-parse --git-dir >/dev/null 2>&1 || die "LIBMTL_GIT=$src is not a git repository"
full="$(git -C "$src" rev-parse --verify --quiet "$COMMIT^{commit}")" \
  || die "commit $COMMIT is not in $src"

mkdir -p "$(dirname "$dest")"
tmp="$(mktemp -d "$(dirname "$dest")/.libmtl.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
git -C "$src" archive --format=tar "$full" | tar -x -C "$tmp"
echo "$full" >"$tmp/$MARKER"
[ -d "$dest" ] && rmdir "$dest"
mv "$tmp" "$dest"
trap - EXIT
echo "get_libmtl: exported LibMTL $full from $src to $dest"
