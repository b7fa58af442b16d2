# bash completion for the writeboost commands. Each binary completes its own
# command line (kongplete): bash runs it with COMP_LINE set. Volume names
# come from the running volumes (wb-create: from /etc/writeboosttab),
# messages and tunables from the binaries' own tables; files otherwise.
for _wb in wb-format-cache wb-create wb-status wb-message wb-check; do
	complete -o default -C "$_wb" "$_wb"
done
unset _wb
