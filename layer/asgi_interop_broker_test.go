package layer_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/layer"
	"github.com/stretchr/testify/require"
)

// Cross-talk with the real asgi_rabbitmq 0.5.5: a Go layer in AsgiRabbitMQ
// mode and Python peers on the same vhost, each case in both directions.
// Subtest names are the matrix: case/direction.

// purgeDeadLetters empties asgi_rabbitmq's shared dead-letter queue: a
// dead letter naming a member that is gone stalls a Python consumer (see
// the peer's README).
func purgeDeadLetters(t testing.TB) {
	ch := rawChannel(t, "")
	_, err := ch.QueuePurge(ctxFor(t, 10*time.Second), amqp.QueuePurge{Queue: "dead-letters"})
	if err != nil && !errors.Is(err, amqp.ErrNotFound) {
		require.NoError(t, err)
	}
}

func goMessage(text string) layer.Message {
	return layer.Message{"type": "interop.test", "text": text, "bin": []byte{0, 0xff, 1}}
}

func pyMessage(text string) map[string]any {
	return map[string]any{"type": "interop.test", "text": text, "bin": pyBytes([]byte{0, 0xff, 1})}
}

// receiveWithin is Receive bounded by d.
func receiveWithin(t testing.TB, l *layer.Layer, d time.Duration, channels ...string) (string, layer.Message, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return l.Receive(ctx, channels...)
}

func TestAsgiRabbitMQInterop(t *testing.T) {
	t.Parallel()
	needBroker(t)
	id := runID(t)
	// Short expiries, the same on both sides: they are queue arguments.
	cfg := map[string]any{"capacity": 2, "expiry": 2, "group_expiry": 3}
	py := startPeer(t, "asgi_rabbitmq", cfg)
	purgeDeadLetters(t)
	t.Cleanup(func() { purgeDeadLetters(t) })
	gol := newLayer(t, layer.Config{Mode: layer.AsgiRabbitMQ, Capacity: 2, Expiry: 2 * time.Second, GroupExpiry: 3 * time.Second})
	ctx := ctxFor(t, 3*time.Minute)
	const wait = 10 * time.Second
	// asgi_rabbitmq never deletes a group's exchange; the test does.
	// (Queues go on their own: x-expires.)
	t.Cleanup(func() {
		raw := rawChannel(t, "")
		for _, g := range []string{".g", ".gp1", ".gp2", ".gexp", ".gexp2", ".gx"} {
			require.NoError(t, raw.ExchangeDelete(ctxFor(t, 10*time.Second), amqp.ExchangeDelete{Exchange: id + g}))
		}
	})

	t.Run("send-receive/go-to-python", func(t *testing.T) {
		ch := id + ".ch1"
		require.NoError(t, gol.Send(ctx, ch, goMessage("go->py")))
		got, m, e := py.in(t).receive(ch, wait)
		require.Empty(t, e)
		require.Equal(t, ch, got)
		require.Equal(t, pyMessage("go->py"), m)
	})
	t.Run("send-receive/python-to-go", func(t *testing.T) {
		ch := id + ".ch2"
		py.in(t).ok(map[string]any{"op": "send", "channel": ch, "message": pyMessage("py->go")})
		got, m, err := receiveWithin(t, gol, wait, id+".other", ch)
		require.NoError(t, err)
		require.Equal(t, ch, got)
		require.Equal(t, goMessage("py->go"), m)
	})
	t.Run("process-channel/go-to-python", func(t *testing.T) {
		prefix := id + ".pc1!"
		require.NoError(t, gol.Send(ctx, prefix+"xyz", goMessage("to a ! channel")))
		got, m, e := py.in(t).receive(prefix, wait)
		require.Empty(t, e)
		require.Equal(t, prefix+"xyz", got, "the asgi_channel header names the channel")
		require.Equal(t, pyMessage("to a ! channel"), m)
	})
	t.Run("process-channel/python-to-go", func(t *testing.T) {
		prefix := id + ".pc2!"
		py.in(t).ok(map[string]any{"op": "send", "channel": prefix + "abc", "message": pyMessage("to a ! channel")})
		got, m, err := receiveWithin(t, gol, wait, prefix)
		require.NoError(t, err)
		require.Equal(t, prefix+"abc", got)
		require.Equal(t, goMessage("to a ! channel"), m)
		_, _, err = receiveWithin(t, gol, wait, prefix+"abc")
		require.ErrorIs(t, err, layer.ErrInvalidName, "receive names a ! channel by its prefix, as asgiref requires")
	})
	t.Run("new-channel/go-sends-to-python-name", func(t *testing.T) {
		ch := py.in(t).ok(map[string]any{"op": "new_channel", "prefix": id + ".nc1?"})["channel"].(string)
		require.Regexp(t, `^`+id+`\.nc1\?[a-zA-Z]{20}$`, ch)
		require.NoError(t, gol.Send(ctx, ch, goMessage("to python's new channel")))
		got, m, e := py.in(t).receive(ch, wait)
		require.Empty(t, e)
		require.Equal(t, ch, got)
		require.Equal(t, pyMessage("to python's new channel"), m)
	})
	t.Run("new-channel/python-sends-to-go-name", func(t *testing.T) {
		ch, err := gol.NewChannel(ctx, id+".nc2?")
		require.NoError(t, err)
		require.Regexp(t, `^`+id+`\.nc2\?[a-zA-Z]{20}$`, ch, "asgi_rabbitmq's new_channel names")
		py.in(t).ok(map[string]any{"op": "send", "channel": ch, "message": pyMessage("to go's new channel")})
		got, m, err := receiveWithin(t, gol, wait, ch)
		require.NoError(t, err)
		require.Equal(t, ch, got)
		require.Equal(t, goMessage("to go's new channel"), m)
	})

	g, pyCh, goCh := id+".g", id+".gpy", id+".ggo"
	t.Run("group-send/go-to-both", func(t *testing.T) {
		py.in(t).ok(map[string]any{"op": "group_add", "group": g, "channel": pyCh})
		require.NoError(t, gol.GroupAdd(ctx, g, goCh))
		// Each side redeclares what the other declared, with its own
		// arguments (a 406 would fail): the same broker objects.
		py.in(t).ok(map[string]any{"op": "group_add", "group": g, "channel": goCh})
		require.NoError(t, gol.GroupAdd(ctx, g, pyCh))
		require.NoError(t, gol.SendGroup(ctx, g, goMessage("from go to all")))
		bothReceive(t, gol, goCh, py, pyCh, "from go to all")
	})
	t.Run("group-send/python-to-both", func(t *testing.T) {
		py.in(t).ok(map[string]any{"op": "group_send", "group": g, "message": pyMessage("from python to all")})
		bothReceive(t, gol, goCh, py, pyCh, "from python to all")
		// A discard on one side is seen by the other's sends.
		require.NoError(t, gol.GroupDiscard(ctx, g, goCh))
		py.in(t).ok(map[string]any{"op": "group_send", "group": g, "message": pyMessage("after discard")})
		_, _, e := py.in(t).receive(pyCh, wait)
		require.Empty(t, e)
		_, _, ok, err := gol.TryReceive(ctx, goCh)
		require.NoError(t, err)
		require.False(t, ok, "discarded by Go, so Python's group_send skips it")
	})
	// Process-specific members get group messages through "dead-letters",
	// which every process (Go and Python) consumes; Python's handling fails
	// now and then (see the peer's README), so these take up to 3 attempts
	// and say how many they needed.
	t.Run("group-send-process-member/python-to-go", func(t *testing.T) {
		gp, prefix := id+".gp1", id+".gpgo!"
		require.NoError(t, gol.GroupAdd(ctx, gp, prefix+"m1"))
		// Python redeclares what Go declared (membership queue, marker
		// queue, group exchange) with its own arguments: a 406 would fail.
		py.in(t).ok(map[string]any{"op": "group_add", "group": gp, "channel": prefix + "m1"})
		// The relay publishes to queue prefix: it exists once received on.
		_, _, _, err := gol.TryReceive(ctx, prefix)
		require.NoError(t, err)
		attempts(t, 3, func(attempt int) error {
			py.in(t).ok(map[string]any{"op": "group_send", "group": gp, "message": pyMessage("to a go ! member")})
			got, m, err := receiveWithin(t, gol, wait, prefix)
			if err != nil {
				return err
			}
			require.Equal(t, prefix+"m1", got)
			require.Equal(t, goMessage("to a go ! member"), m)
			return nil
		})
	})
	t.Run("group-send-process-member/go-to-python", func(t *testing.T) {
		gp, prefix := id+".gp2", id+".gppy!"
		py.in(t).ok(map[string]any{"op": "group_add", "group": gp, "channel": prefix + "m1"})
		_, _, e := py.in(t).receive(prefix, 0)
		require.Equal(t, "Timeout", e)
		attempts(t, 3, func(attempt int) error {
			require.NoError(t, gol.SendGroup(ctx, gp, goMessage("to a python ! member")))
			got, m, e := py.in(t).receive(prefix, wait)
			if e != "" {
				return errors.New(e)
			}
			require.Equal(t, prefix+"m1", got)
			require.Equal(t, pyMessage("to a python ! member"), m)
			return nil
		})
	})

	t.Run("channel-full/go-sees-python-full", func(t *testing.T) {
		ch := id + ".full1"
		for i := range 2 {
			py.in(t).ok(map[string]any{"op": "send", "channel": ch, "message": pyMessage("fill")})
			_ = i
		}
		// Python publishes without confirms: wait until the broker counts both.
		raw := rawChannel(t, "")
		require.True(t, eventually(ctx, 20*time.Millisecond, func() bool {
			ok, err := raw.QueueDeclare(ctx, amqp.QueueDeclare{Queue: ch, Passive: true})
			return err == nil && ok.MessageCount >= 2
		}))
		err := gol.Send(ctx, ch, goMessage("one too many"))
		require.ErrorIs(t, err, layer.ErrChannelFull)
		_, m, e := py.in(t).receive(ch, wait)
		require.Empty(t, e)
		require.Equal(t, pyMessage("fill"), m)
	})
	t.Run("channel-full/python-sees-go-full", func(t *testing.T) {
		ch := id + ".full2"
		for range 2 {
			require.NoError(t, gol.Send(ctx, ch, goMessage("fill")))
		}
		r := py.in(t).do(map[string]any{"op": "send", "channel": ch, "message": pyMessage("one too many")})
		require.Equal(t, "ChannelFull", r["error"], "%v", r)
		_, _, err := receiveWithin(t, gol, wait, ch)
		require.NoError(t, err)
	})

	t.Run("expiry/go-to-python", func(t *testing.T) {
		ch := id + ".exp1"
		require.NoError(t, gol.Send(ctx, ch, goMessage("expires")))
		time.Sleep(2500 * time.Millisecond)
		_, _, e := py.in(t).receive(ch, 500*time.Millisecond)
		require.Equal(t, "Timeout", e, "the message expired unread (per-message expiration)")
	})
	t.Run("expiry/python-to-go", func(t *testing.T) {
		ch := id + ".exp2"
		py.in(t).ok(map[string]any{"op": "send", "channel": ch, "message": pyMessage("expires")})
		time.Sleep(2500 * time.Millisecond)
		_, _, ok, err := gol.TryReceive(ctx, ch)
		require.NoError(t, err)
		require.False(t, ok, "the message expired unread")
	})
	// An expired message removes its channel from every group (Python's
	// on_dead_letter): here the channel's exchange, and with it the
	// group's binding. Both members' messages expire; each side's dead
	// letter consumer may do the removal.
	t.Run("expiry-leaves-groups/python-to-go", func(t *testing.T) {
		ge, goMember := id+".gexp", id+".gexpgo"
		require.NoError(t, gol.GroupAdd(ctx, ge, goMember))
		require.NoError(t, gol.Send(ctx, goMember, goMessage("left to expire")))
		raw := rawChannel(t, "")
		ok := eventually(ctx, 200*time.Millisecond, func() bool { return !exchangeExists(t, raw, goMember) })
		require.True(t, ok, "the member's exchange (its group bindings) was deleted")
		py.in(t).ok(map[string]any{"op": "group_send", "group": ge, "message": pyMessage("after expiry")})
		_, _, err := receiveWithin(t, gol, time.Second, goMember)
		require.ErrorIs(t, err, context.DeadlineExceeded)
	})

	t.Run("expiry-leaves-groups/go-to-python", func(t *testing.T) {
		ge, pyMember := id+".gexp2", id+".gexppy"
		py.in(t).ok(map[string]any{"op": "group_add", "group": ge, "channel": pyMember})
		py.in(t).ok(map[string]any{"op": "send", "channel": pyMember, "message": pyMessage("left to expire")})
		raw := rawChannel(t, "")
		ok := eventually(ctx, 200*time.Millisecond, func() bool { return !exchangeExists(t, raw, pyMember) })
		require.True(t, ok, "the member's exchange (its group bindings) was deleted")
		require.NoError(t, gol.SendGroup(ctx, ge, goMessage("after expiry")))
		_, _, e := py.in(t).receive(pyMember, time.Second)
		require.Equal(t, "Timeout", e)
	})

	// Group expiry: each side's membership lapses group_expiry after its
	// group_add; markers expire through "dead-letters".
	t.Run("group-expiry/both", func(t *testing.T) {
		gx, goMember, pyMember := id+".gx", id+".gxgo", id+".gxpy"
		require.NoError(t, gol.GroupAdd(ctx, gx, goMember))
		py.in(t).ok(map[string]any{"op": "group_add", "group": gx, "channel": pyMember})
		require.NoError(t, gol.SendGroup(ctx, gx, goMessage("before")))
		_, _, err := receiveWithin(t, gol, wait, goMember)
		require.NoError(t, err)
		_, _, e := py.in(t).receive(pyMember, wait)
		require.Empty(t, e)
		attempts(t, 3, func(attempt int) error {
			time.Sleep(5 * time.Second) // 3 s, then the dead-letter consumers' unbind
			py.in(t).ok(map[string]any{"op": "group_send", "group": gx, "message": pyMessage("after")})
			require.NoError(t, gol.SendGroup(ctx, gx, goMessage("after")))
			if _, _, err := receiveWithin(t, gol, 1500*time.Millisecond, goMember); err == nil {
				return errors.New("the Go member still received")
			}
			if _, _, e := py.in(t).receive(pyMember, 500*time.Millisecond); e != "Timeout" {
				return errors.New("the Python member still received")
			}
			return nil
		})
	})
}

// TestAsgiRabbitMQInteropEncryption: Fernet with key rotation across the
// languages; messages are encrypted with the first key and decrypted with
// any.
func TestAsgiRabbitMQInteropEncryption(t *testing.T) {
	t.Parallel()
	needBroker(t)
	id := runID(t)
	pyOld := startPeer(t, "asgi_rabbitmq", map[string]any{"symmetric_encryption_keys": []string{"k-old"}})
	pyRotated := startPeer(t, "asgi_rabbitmq", map[string]any{"symmetric_encryption_keys": []string{"k-new", "k-old"}})
	goOld := newLayer(t, layer.Config{Mode: layer.AsgiRabbitMQ, SymmetricEncryptionKeys: []string{"k-old"}})
	goRotated := newLayer(t, layer.Config{Mode: layer.AsgiRabbitMQ, SymmetricEncryptionKeys: []string{"k-new", "k-old"}})
	ctx := ctxFor(t, time.Minute)
	const wait = 10 * time.Second

	t.Run("encryption/python-to-go", func(t *testing.T) {
		for _, c := range []struct {
			from *peer
			to   *layer.Layer
		}{{pyOld, goRotated}, {pyRotated, goRotated}, {pyOld, goOld}} {
			ch := id + ".enc1"
			c.from.in(t).ok(map[string]any{"op": "send", "channel": ch, "message": pyMessage("secret")})
			_, m, err := receiveWithin(t, c.to, wait, ch)
			require.NoError(t, err)
			require.Equal(t, goMessage("secret"), m)
		}
		// What the rotated side encrypts, the old key alone cannot read.
		ch := id + ".enc2"
		pyRotated.in(t).ok(map[string]any{"op": "send", "channel": ch, "message": pyMessage("new key")})
		_, _, err := receiveWithin(t, goOld, wait, ch)
		require.ErrorIs(t, err, layer.ErrDecrypt)
	})
	t.Run("encryption/go-to-python", func(t *testing.T) {
		for _, c := range []struct {
			from *layer.Layer
			to   *peer
		}{{goOld, pyRotated}, {goRotated, pyRotated}, {goOld, pyOld}} {
			ch := id + ".enc3"
			require.NoError(t, c.from.Send(ctx, ch, goMessage("secret")))
			_, m, e := c.to.in(t).receive(ch, wait)
			require.Empty(t, e)
			require.Equal(t, pyMessage("secret"), m)
		}
		ch := id + ".enc4"
		require.NoError(t, goRotated.Send(ctx, ch, goMessage("new key")))
		_, _, e := pyOld.in(t).receive(ch, wait)
		require.Contains(t, e, "InvalidToken")
	})
}

// attempts runs f until it returns nil, at most n times, and logs how many
// it took: for cases that cross asgi_rabbitmq's own flaky dead-letter
// handling. A require failure inside f fails at once.
func attempts(t *testing.T, n int, f func(attempt int) error) {
	t.Helper()
	var err error
	for a := 1; a <= n; a++ {
		if err = f(a); err == nil {
			if a > 1 {
				t.Logf("passed on attempt %d (earlier: the dead-letter path lost it)", a)
			}
			return
		}
		t.Logf("attempt %d: %v", a, err)
	}
	t.Fatalf("failed %d attempts: %v", n, err)
}
