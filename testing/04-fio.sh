#!/usr/bin/env bash
# 04: fio's nbd engine doing random writes with crc32c verification on
# several jobs at once, each with requests in flight. The jobs use disjoint
# regions (offset_increment) so each verifies its own data; block sizes mix
# sub-block and multi-block writes.
. "$WB_TESTING/lib.sh"

sparse backing.img 64M
sparse cache.img 16M
wb_start vol backing.img cache.img --reformat

fio --name=verify --ioengine=nbd --uri="$(wb_uri vol)" \
	--rw=randwrite --bssplit=512/10:4k/50:16k/30:64k/10 --blockalign=512 \
	--numjobs=4 --size=12M --offset_increment=16M --iodepth=16 \
	--verify=crc32c --verify_fatal=1 --do_verify=1 --verify_backlog=256 \
	--group_reporting --output-format=json --output=fio.json || fail "fio failed"
jq -e '.jobs[0].error == 0' fio.json >/dev/null || fail "fio reported an error"
w=$(jq -r '.jobs[0].write.io_bytes' fio.json)
r=$(jq -r '.jobs[0].read.io_bytes' fio.json)
iops=$(jq -r '.jobs[0].write.iops | floor' fio.json)
[ "$w" -gt 0 ] && [ "$r" -gt 0 ] || fail "fio wrote $w and verified $r bytes"
wb_stop
echo "figure: fio 4 jobs randwrite+crc32c verify: written $w B, verified $r B, $iops write IOPS"
