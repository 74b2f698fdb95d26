package layer

import "context"

// Flush would remove every channel, group and message of the layer.
// Neither Python layer has it (asgi_rabbitmq 0.5.5 and channels_rabbitmq
// raise NotImplementedError), so in their modes it fails with an
// [*UnsupportedError]. In Native mode it is not implemented yet either:
// AMQP cannot list the queues and exchanges of a namespace, and the layer
// keeps no registry of them; it fails the same way.
func (l *Layer) Flush(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	reason := "the Python layer has no flush"
	if l.cfg.Mode == Native {
		reason = "not implemented: AMQP cannot list a namespace's queues and exchanges, and the layer keeps no registry of them"
	}
	return &UnsupportedError{Mode: l.cfg.Mode, Feature: "Flush", Reason: reason}
}
