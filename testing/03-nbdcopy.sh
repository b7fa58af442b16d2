#!/usr/bin/env bash
# 03: nbdcopy the whole volume in and out. A random image goes in (many
# requests in flight over several connections), comes out byte for byte
# (cmp), and again after the cache has been written back and dropped, when
# reads are served from the backing device.
. "$WB_TESTING/lib.sh"

sparse backing.img 48M
sparse cache.img 16M
head -c $((48 << 20)) /dev/urandom >in.img
wb_start vol backing.img cache.img --reformat
uri=$(wb_uri vol)

note "copy in (the cache is smaller than the image: the ring wraps)"
nbdcopy --flush in.img "$uri" || fail "nbdcopy in"
note "copy out"
nbdcopy "$uri" out.img || fail "nbdcopy out"
cmp in.img out.img || fail "the volume differs from what was copied in"

note "write back, drop the cache, copy out again"
wb-message vol drop_caches || fail "drop_caches"
rm -f out.img
nbdcopy -C 4 "$uri" out.img || fail "nbdcopy out after drop_caches"
cmp in.img out.img || fail "the volume differs after drop_caches"
wb_stop
cmp in.img backing.img || fail "backing file differs after write back and a clean stop"
rm -f in.img out.img
echo "figure: nbdcopy 48 MiB in/out/out, bytes match"
