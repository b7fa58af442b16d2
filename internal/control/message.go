package control

import "github.com/writeboost/writeboost/internal/vocab"

// RefuseRemove returns an *InUseError when m is a remove without --force
// and clients NBD connections are open to the volume name; nil otherwise.
// The control server asks it before a remove starts, and the volume again
// just before it stops (a writeback may have taken minutes): the engine
// side decides, not the client.
func RefuseRemove(m vocab.Message, name string, clients uint64) error {
	if m.Kind != vocab.MsgRemove || m.Force || clients == 0 {
		return nil
	}
	return &InUseError{Name: name, Clients: clients}
}
