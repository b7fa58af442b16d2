package vocab

import (
	"fmt"
	"strconv"
	"strings"
)

// MessageKind says what a message asks for.
type MessageKind int

// The message verbs. The first three are the kernel's (cf.
// writeboost_message); flush and remove stand in for dmsetup suspend and
// dmsetup remove.
const (
	MsgSetTunable MessageKind = iota + 1 // KEY VALUE, a dynamic tunable
	MsgClearStat                         // clear_stat: zero the 16 counters and nr_partial_flushed
	MsgDropCaches                        // drop_caches: write back until nothing is dirty
	MsgFlush                             // flush: seal and write the RAM buffer
	MsgRemove                            // remove [--no-writeback] [--force]: stop the volume cleanly
)

// Message is a validated message: ParseMessage makes one from words, once
// at each edge (wb-message's argv, the control socket's request); the
// volume acts on it.
type Message struct {
	Kind        MessageKind
	Tunable     Tunable // MsgSetTunable: which one
	Value       int64   // MsgSetTunable: the new value, within its range
	NoWriteback bool    // MsgRemove: skip writing dirty blocks back
	Force       bool    // MsgRemove: stop even while NBD clients are connected
}

// Verb returns the message's first word: a tunable's name, or the verb.
func (m Message) Verb() string {
	if m.Kind == MsgSetTunable {
		return m.Tunable.String()
	}
	return m.Args()[0]
}

// Args returns the canonical words of m, as sent over the control socket;
// ParseMessage(m.Args()) gives m back.
func (m Message) Args() []string {
	switch m.Kind {
	case MsgSetTunable:
		return []string{m.Tunable.String(), strconv.FormatInt(m.Value, 10)}
	case MsgClearStat:
		return []string{"clear_stat"}
	case MsgDropCaches:
		return []string{"drop_caches"}
	case MsgFlush:
		return []string{"flush"}
	case MsgRemove:
		args := []string{"remove"}
		if m.NoWriteback {
			args = append(args, "--no-writeback")
		}
		if m.Force {
			args = append(args, "--force")
		}
		return args
	}
	return []string{fmt.Sprintf("MessageKind(%d)", int(m.Kind))}
}

// ParseMessage validates the words of a message (what follows the sector
// in `dmsetup message NAME 0 ...`): a dynamic tunable and its value within
// the kernel's range, clear_stat, drop_caches, flush or remove
// [--no-writeback] [--force] (the two flags in either order, each at most
// once). Verbs and keys match case-insensitively, as the kernel's do.
// Static options are refused with the reason.
func ParseMessage(args []string) (Message, error) {
	if len(args) == 0 {
		return Message{}, fmt.Errorf("%w: empty message", ErrBadMessage)
	}
	verb := strings.ToLower(args[0])
	noArgs := func(k MessageKind) (Message, error) {
		if len(args) != 1 {
			return Message{}, fmt.Errorf("%w: %s takes no arguments, got %q", ErrBadMessage, verb, strings.Join(args[1:], " "))
		}
		return Message{Kind: k}, nil
	}
	switch verb {
	case "clear_stat":
		return noArgs(MsgClearStat)
	case "drop_caches":
		return noArgs(MsgDropCaches)
	case "flush":
		return noArgs(MsgFlush)
	case "remove":
		m := Message{Kind: MsgRemove}
		for _, a := range args[1:] {
			switch {
			case a == "--no-writeback" && !m.NoWriteback:
				m.NoWriteback = true
			case a == "--force" && !m.Force:
				m.Force = true
			default:
				return Message{}, fmt.Errorf("%w: remove takes only --no-writeback and --force, each at most once, got %q", ErrBadMessage, strings.Join(args[1:], " "))
			}
		}
		return m, nil
	case "nr_cur_batched_writeback":
		return Message{}, fmt.Errorf("%w: nr_cur_batched_writeback is the writeback daemon's current batch and read-only; set nr_max_batched_writeback", ErrBadMessage)
	}
	t, ok := LookupTunable(verb)
	if !ok {
		return Message{}, fmt.Errorf("%w: unknown message %q%s (want clear_stat, drop_caches, flush, remove [--no-writeback] [--force], or one of %s followed by a value)",
			ErrBadMessage, args[0], didYouMean(args[0], append(MessageWords(), staticNames()...)), Names(false))
	}
	s := t.Spec()
	if s.Static {
		return Message{}, fmt.Errorf("%w: %s can only be set when the volume is created (wb-create NAME BACKING CACHE %s N); it cannot change while running",
			ErrStaticOption, s.Name, s.Name)
	}
	if len(args) != 2 {
		return Message{}, fmt.Errorf("%w: %s takes one value (%d..%d), got %d", ErrBadMessage, s.Name, s.Min, s.Max, len(args)-1)
	}
	n, err := t.ParseValue(args[1])
	if err != nil {
		return Message{}, err
	}
	return Message{Kind: MsgSetTunable, Tunable: t, Value: n}, nil
}

// MessageWords are the first words of the messages wb-message sends, for
// shell completion: the verbs, then the dynamic tunables.
func MessageWords() []string {
	words := []string{"clear_stat", "drop_caches", "flush", "remove"}
	for _, t := range Tunables() {
		if !t.Spec().Static {
			words = append(words, t.String())
		}
	}
	return words
}

// TunableNames are the names of every tunable, static ones included (the
// KEYs of wb-create's optional args), for shell completion.
func TunableNames() []string {
	var names []string
	for _, t := range Tunables() {
		names = append(names, t.String())
	}
	return names
}

// staticNames are the static tunables' names: not messages, but a typo of
// one is better answered with its name and then why it cannot be sent.
func staticNames() []string {
	var names []string
	for _, t := range Tunables() {
		if t.Spec().Static {
			names = append(names, t.String())
		}
	}
	return names
}
