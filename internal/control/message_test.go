package control

import (
	"errors"
	"testing"

	"github.com/writeboost/writeboost/internal/vocab"
)

func TestRefuseRemove(t *testing.T) {
	remove, force := vocab.Message{Kind: vocab.MsgRemove}, vocab.Message{Kind: vocab.MsgRemove, Force: true}
	for _, tc := range []struct {
		m       vocab.Message
		name    string
		clients uint64
		want    string // "" = allowed
	}{
		{remove, "vol", 0, ""},
		{remove, "vol", 1, "remove refused: 1 NBD client is connected to vol; disconnect it first, or remove --force"},
		{remove, "vol", 2, "remove refused: 2 NBD clients are connected to vol; disconnect them first, or remove --force"},
		{vocab.Message{Kind: vocab.MsgRemove, NoWriteback: true}, "", 3, "remove refused: 3 NBD clients are connected to the volume; disconnect them first, or remove --force"},
		{force, "vol", 2, ""},
		{vocab.Message{Kind: vocab.MsgRemove, NoWriteback: true, Force: true}, "vol", 5, ""},
		{vocab.Message{Kind: vocab.MsgFlush}, "vol", 5, ""},
		{vocab.Message{Kind: vocab.MsgDropCaches}, "vol", 5, ""},
	} {
		err := RefuseRemove(tc.m, tc.name, tc.clients)
		if tc.want == "" {
			if err != nil {
				t.Errorf("RefuseRemove(%q, %q, %d) = %v, want nil", tc.m.Args(), tc.name, tc.clients, err)
			}
			continue
		}
		var iu *InUseError
		if !errors.Is(err, ErrInUse) || !errors.As(err, &iu) || iu.Clients != tc.clients || err.Error() != tc.want {
			t.Errorf("RefuseRemove(%q, %q, %d) = %v, want %q wrapping ErrInUse", tc.m.Args(), tc.name, tc.clients, err, tc.want)
		}
	}
}
