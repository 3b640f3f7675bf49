#!/usr/bin/env bash
# Fetches libchdb.so (the embedded ClickHouse engine) from its npm package into
# a destination path, atomically: an interrupted run leaves either no file or
# the whole file, never half of it, so "the file exists" means "it is usable".
#
# usage: fetch-libchdb.sh <version> <destination path of libchdb.so>
set -euo pipefail

if [[ $# -ne 2 ]]; then
	echo "usage: $0 <version> <destination path of libchdb.so>" >&2
	exit 2
fi
version=$1
dest=$2
package="@chdb/lib-linux-x64-gnu@${version}"

if [[ -f $dest ]]; then
	exit 0
fi
for tool in npm tar; do
	if ! command -v "$tool" >/dev/null; then
		echo "fetch-libchdb: $tool is required to fetch $package" >&2
		exit 1
	fi
done

dest_dir=$(dirname "$dest")
mkdir -p "$dest_dir"
# The work directory sits next to the destination rather than in /tmp: the
# library is ~560 MB (too big for many tmpfs /tmp), and the final mv must stay
# on one filesystem to be an atomic rename.
work=$(mktemp -d "$dest_dir/.fetch.XXXXXX")
trap 'rm -rf "$work"' EXIT

echo "fetch-libchdb: downloading $package (~160 MB) into $dest_dir" >&2
# A private npm cache keeps a second copy of the tarball out of ~/.npm; npm
# still checks the tarball against the registry's integrity hash.
(cd "$work" && npm pack "$package" --cache "$work/npm-cache" --loglevel=error >/dev/null)
tarballs=("$work"/*.tgz)
if [[ ${#tarballs[@]} -ne 1 || ! -f ${tarballs[0]} ]]; then
	echo "fetch-libchdb: npm pack $package did not produce one tarball" >&2
	exit 1
fi
tar -xzmf "${tarballs[0]}" -C "$work" package/libchdb.so
chmod 0644 "$work/package/libchdb.so"
mv -f "$work/package/libchdb.so" "$dest"
echo "fetch-libchdb: installed $dest" >&2
