package layer_test

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/layer"
	"github.com/stretchr/testify/require"
)

// Tests that run against the broker at AMQP_URL. Each uses a namespace of
// its own; queues left behind expire (x-expires) on their own.

func TestSendReceive(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	a := newLayer(t, layer.Config{Namespace: ns})
	b := newLayer(t, layer.Config{Namespace: ns})
	ctx := ctxFor(t, 30*time.Second)

	sent := layer.Message{
		"type": "http.request", "body": []byte("\x00binary"), "status": 200, "more_body": false,
		"headers": []any{[]any{[]byte("host"), []byte("example.com")}}, "scope": map[string]any{"path": "/", "n": -1.5},
		"none": nil,
	}
	require.NoError(t, a.Send(ctx, "http.request", sent))
	ch, got, err := b.Receive(ctx, "http.request")
	require.NoError(t, err)
	require.Equal(t, "http.request", ch)
	require.Equal(t, layer.Message{
		"type": "http.request", "body": []byte("\x00binary"), "status": int64(200), "more_body": false,
		"headers": []any{[]any{[]byte("host"), []byte("example.com")}}, "scope": map[string]any{"path": "/", "n": -1.5},
		"none": nil,
	}, got)

	// In order, each once.
	for i := range 20 {
		require.NoError(t, a.Send(ctx, "orders", layer.Message{"i": i}))
	}
	for i := range 20 {
		_, m, err := b.Receive(ctx, "orders")
		require.NoError(t, err)
		require.Equal(t, int64(i), m["i"])
	}
	_, _, ok, err := b.TryReceive(ctx, "orders")
	require.NoError(t, err)
	require.False(t, ok)
}

func TestReceiveWaitsForSend(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	a := newLayer(t, layer.Config{Namespace: ns})
	b := newLayer(t, layer.Config{Namespace: ns})
	ctx := ctxFor(t, 30*time.Second)

	type received struct {
		ch  string
		m   layer.Message
		err error
	}
	done := make(chan received, 1)
	go func() {
		ch, m, err := b.Receive(ctx, "one", "two", "three")
		done <- received{ch, m, err}
	}()
	select {
	case r := <-done:
		t.Fatalf("Receive returned before any Send: %+v", r)
	case <-time.After(300 * time.Millisecond):
	}
	start := time.Now()
	require.NoError(t, a.Send(ctx, "two", layer.Message{"hello": "world"}))
	r := <-done
	t.Logf("Receive returned %v after Send started", time.Since(start))
	require.NoError(t, r.err)
	require.Equal(t, "two", r.ch)
	require.Equal(t, layer.Message{"hello": "world"}, r.m)
}

func TestReceiveFromSeveralChannels(t *testing.T) {
	t.Parallel()
	l := newLayer(t, layer.Config{Namespace: namespace(t)})
	ctx := ctxFor(t, 30*time.Second)
	want := map[string]int{}
	for i := range 30 {
		ch := fmt.Sprintf("c%d", i%3)
		require.NoError(t, l.Send(ctx, ch, layer.Message{"i": i}))
		want[ch]++
	}
	got := map[string]int{}
	next := map[string]int64{"c0": 0, "c1": 1, "c2": 2}
	for range 30 {
		ch, m, err := l.Receive(ctx, "c0", "c1", "c2", "c1")
		require.NoError(t, err)
		got[ch]++
		require.Equal(t, next[ch], m["i"], "in order within channel %s", ch)
		next[ch] += 3
	}
	require.Equal(t, want, got)
	_, _, ok, err := l.TryReceive(ctx, "c0", "c1", "c2")
	require.NoError(t, err)
	require.False(t, ok, "nothing left: the extras Receive was handed went back")
}

// A Receive that gives up loses nothing: many receivers with tiny deadlines
// race with senders, and every message is received exactly once.
func TestReceiveCancelledLosesNothing(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	sender := newLayer(t, layer.Config{Namespace: ns})
	receiver := newLayer(t, layer.Config{Namespace: ns, Capacity: 1000})
	ctx := ctxFor(t, 60*time.Second)

	// Declared with the receiver's capacity before the sender creates it.
	_, _, ok, err := receiver.TryReceive(ctx, "racy", "racy2")
	require.NoError(t, err)
	require.False(t, ok)

	const n = 200
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range n {
			require.NoError(t, sender.Send(ctx, []string{"racy", "racy2"}[i%2], layer.Message{"i": i}))
			if i%20 == 0 {
				time.Sleep(5 * time.Millisecond)
			}
		}
	})
	var mu sync.Mutex
	seen := map[int64]int{}
	var timeouts atomic.Int64
	for range 4 {
		wg.Go(func() {
			for {
				mu.Lock()
				if len(seen) == n {
					mu.Unlock()
					return
				}
				wait := time.Duration(1+len(seen)%7) * time.Millisecond
				mu.Unlock()
				rctx, cancel := context.WithTimeout(ctx, wait)
				_, m, err := receiver.Receive(rctx, "racy", "racy2")
				cancel()
				if errors.Is(err, context.DeadlineExceeded) {
					timeouts.Add(1)
					continue
				}
				if !errors.Is(err, nil) {
					t.Error(err)
					return
				}
				mu.Lock()
				seen[m["i"].(int64)]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	t.Logf("%d messages received, %d receives timed out", len(seen), timeouts.Load())
	require.Len(t, seen, n)
	for i, c := range seen {
		require.Equal(t, 1, c, "message %d received %d times", i, c)
	}
	require.Positive(t, timeouts.Load(), "some receives gave up")
}

func TestTryReceive(t *testing.T) {
	t.Parallel()
	l := newLayer(t, layer.Config{Namespace: namespace(t)})
	ctx := ctxFor(t, 30*time.Second)
	start := time.Now()
	ch, m, ok, err := l.TryReceive(ctx, "empty", "also-empty")
	require.NoError(t, err)
	require.False(t, ok)
	require.Empty(t, ch)
	require.Nil(t, m)
	t.Logf("TryReceive on two empty channels took %v", time.Since(start))

	require.NoError(t, l.Send(ctx, "also-empty", layer.Message{"x": 1}))
	ch, m, ok, err = l.TryReceive(ctx, "empty", "also-empty")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, "also-empty", ch)
	require.Equal(t, layer.Message{"x": int64(1)}, m)
}

func TestNewChannel(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	a := newLayer(t, layer.Config{Namespace: ns})
	b := newLayer(t, layer.Config{Namespace: ns})
	ctx := ctxFor(t, 30*time.Second)
	names := map[string]bool{}
	for range 10 {
		name, err := a.NewChannel(ctx, "chat")
		require.NoError(t, err)
		require.Regexp(t, `^chat![A-Z2-7]{26}$`, name)
		require.False(t, names[name], "unique")
		names[name] = true
	}
	reply, err := a.NewChannel(ctx, "http.response!")
	require.NoError(t, err)
	require.Regexp(t, `^http\.response![A-Z2-7]{26}$`, reply)
	// The channel exists from the start: a message sent before its reader
	// first listens waits for it.
	require.NoError(t, b.Send(ctx, reply, layer.Message{"status": 204}))
	ch, m, err := a.Receive(ctx, reply)
	require.NoError(t, err)
	require.Equal(t, reply, ch)
	require.Equal(t, int64(204), m["status"])

	_, err = a.NewChannel(ctx, "bad prefix")
	require.ErrorIs(t, err, layer.ErrInvalidName)
}

func TestInvalidNames(t *testing.T) {
	t.Parallel()
	l := newLayer(t, layer.Config{Namespace: namespace(t)})
	ctx := ctxFor(t, 10*time.Second)
	bad := "no spaces"
	require.ErrorIs(t, l.Send(ctx, bad, layer.Message{}), layer.ErrInvalidName)
	_, _, err := l.Receive(ctx, "ok", bad)
	require.ErrorIs(t, err, layer.ErrInvalidName)
	_, _, err = l.Receive(ctx)
	require.Error(t, err, "no channel")
	_, _, _, err = l.TryReceive(ctx, bad)
	require.ErrorIs(t, err, layer.ErrInvalidName)
	require.ErrorIs(t, l.GroupAdd(ctx, "g!x", "ok"), layer.ErrInvalidName)
	require.ErrorIs(t, l.GroupAdd(ctx, "g", bad), layer.ErrInvalidName)
	require.ErrorIs(t, l.GroupDiscard(ctx, "", "ok"), layer.ErrInvalidName)
	require.ErrorIs(t, l.SendGroup(ctx, "a:b", layer.Message{}), layer.ErrInvalidName)
	long := strings.Repeat("a", layer.MaxNameLength+1)
	require.ErrorIs(t, l.Send(ctx, long, layer.Message{}), layer.ErrInvalidName, "100 characters: asgiref refuses it")
	require.NoError(t, l.Send(ctx, long[1:], layer.Message{}), "99 characters")
}

func TestExpiry(t *testing.T) {
	t.Parallel()
	l := newLayer(t, layer.Config{Namespace: namespace(t), Expiry: 700 * time.Millisecond})
	ctx := ctxFor(t, 30*time.Second)
	require.NoError(t, l.Send(ctx, "short", layer.Message{"n": 1}))
	_, m, ok, err := l.TryReceive(ctx, "short")
	require.NoError(t, err)
	require.True(t, ok, "read before it expires")
	require.Equal(t, int64(1), m["n"])

	require.NoError(t, l.Send(ctx, "short", layer.Message{"n": 2}))
	time.Sleep(1200 * time.Millisecond)
	_, _, ok, err = l.TryReceive(ctx, "short")
	require.NoError(t, err)
	require.False(t, ok, "expired unread after 700 ms")

	// Expiry applies to group messages too.
	require.NoError(t, l.GroupAdd(ctx, "g", "short"))
	require.NoError(t, l.SendGroup(ctx, "g", layer.Message{"n": 3}))
	time.Sleep(1200 * time.Millisecond)
	_, _, ok, err = l.TryReceive(ctx, "short")
	require.NoError(t, err)
	require.False(t, ok, "a group message expires too")
	require.NoError(t, l.GroupDiscard(ctx, "g", "short"))
}

// Capacity under load: concurrent senders on several layers fill a channel;
// exactly Capacity messages are kept and every other Send gets
// ErrChannelFull.
func TestChannelFullUnderLoad(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	const capacity, senders, perSender = 25, 8, 20
	cfg := layer.Config{Namespace: ns, Capacity: capacity}
	layers := []*layer.Layer{newLayer(t, cfg), newLayer(t, cfg)}
	ctx := ctxFor(t, 60*time.Second)

	var ok, full atomic.Int64
	var wg sync.WaitGroup
	for s := range senders {
		wg.Go(func() {
			for i := range perSender {
				err := layers[s%2].Send(ctx, "busy", layer.Message{"s": s, "i": i})
				var cf *layer.ChannelFullError
				switch {
				case err == nil:
					ok.Add(1)
				case errors.As(err, &cf):
					require.ErrorIs(t, err, layer.ErrChannelFull)
					require.Equal(t, "busy", cf.Channel)
					require.Equal(t, capacity, cf.Capacity)
					full.Add(1)
				default:
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	t.Logf("%d sent, %d refused as full", ok.Load(), full.Load())
	require.Equal(t, int64(capacity), ok.Load())
	require.Equal(t, int64(senders*perSender-capacity), full.Load())

	stored := 0
	for {
		_, _, got, err := layers[0].TryReceive(ctx, "busy")
		require.NoError(t, err)
		if !got {
			break
		}
		stored++
	}
	require.Equal(t, capacity, stored, "exactly capacity messages were stored")
	require.NoError(t, layers[1].Send(ctx, "busy", layer.Message{}), "room again once read")
}

func TestChannelCapacityRules(t *testing.T) {
	t.Parallel()
	l := newLayer(t, layer.Config{Namespace: namespace(t), Capacity: 3, ChannelCapacity: []layer.CapacityRule{
		{Pattern: "http.request", Capacity: 5},              // a glob, as a string key in Django settings
		{Regexp: regexp.MustCompile(`http\.`), Capacity: 1}, // a regexp, as re.compile(...): matched at the start
	}})
	ctx := ctxFor(t, 30*time.Second)
	fill := func(ch string) int {
		for i := 0; ; i++ {
			err := l.Send(ctx, ch, layer.Message{"i": i})
			if errors.Is(err, layer.ErrChannelFull) {
				return i
			}
			require.NoError(t, err)
			require.Less(t, i, 100)
		}
	}
	require.Equal(t, 5, fill("http.request"))
	require.Equal(t, 1, fill("http.disconnect"))
	require.Equal(t, 3, fill("websocket.receive"))
	require.Equal(t, 5, l.Capacity("http.request"))
	require.Equal(t, 1, l.Capacity("http.response!x"))
	require.Equal(t, 3, l.Capacity("other"))
}

func TestGroups(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	a := newLayer(t, layer.Config{Namespace: ns})
	b := newLayer(t, layer.Config{Namespace: ns})
	raw := rawChannel(t, "")
	ctx := ctxFor(t, 30*time.Second)

	var members []string
	for range 3 {
		name, err := a.NewChannel(ctx, "ws")
		require.NoError(t, err)
		members = append(members, name)
		require.NoError(t, a.GroupAdd(ctx, "room", name))
	}
	require.NoError(t, a.GroupAdd(ctx, "room", "worker"), "a normal channel can be a member too")
	require.NoError(t, a.GroupAdd(ctx, "room", members[0]), "adding twice is one membership")
	require.NoError(t, a.GroupAdd(ctx, "other-room", members[0]))

	require.NoError(t, b.SendGroup(ctx, "room", layer.Message{"text": "hi"}))
	for _, ch := range append(members, "worker") {
		got, m, err := b.Receive(ctx, ch)
		require.NoError(t, err)
		require.Equal(t, ch, got)
		require.Equal(t, "hi", m["text"])
		_, _, ok, err := b.TryReceive(ctx, ch)
		require.NoError(t, err)
		require.False(t, ok, "exactly one copy for %s", ch)
	}

	require.NoError(t, b.GroupDiscard(ctx, "room", members[1]))
	require.False(t, exchangeExists(t, raw, memberName(ns, "room", members[1])), "the membership's exchange is deleted")
	require.False(t, queueExists(t, raw, memberName(ns, "room", members[1])), "and its queue")
	require.True(t, exchangeExists(t, raw, memberName(ns, "room", members[0])), "the others' stay")
	require.NoError(t, b.GroupDiscard(ctx, "room", members[1]), "discarding twice is fine")
	require.NoError(t, b.GroupDiscard(ctx, "never", "nobody"), "discarding from an unknown group is fine")
	require.NoError(t, a.SendGroup(ctx, "room", layer.Message{"text": "second"}))
	for _, ch := range []string{members[0], members[2], "worker"} {
		_, m, err := b.Receive(ctx, ch)
		require.NoError(t, err)
		require.Equal(t, "second", m["text"])
	}
	_, _, ok, err := b.TryReceive(ctx, members[1])
	require.NoError(t, err)
	require.False(t, ok, "a discarded member gets nothing")

	require.NoError(t, a.SendGroup(ctx, "other-room", layer.Message{"text": "elsewhere"}))
	ch, m, err := b.Receive(ctx, members[0], members[2])
	require.NoError(t, err)
	require.Equal(t, members[0], ch)
	require.Equal(t, "elsewhere", m["text"])

	// A group nobody joined takes the message and drops it; the layer's
	// channel survives the broker's 404 for the missing exchange.
	for range 3 {
		require.NoError(t, a.SendGroup(ctx, "empty-room", layer.Message{"text": "void"}))
	}
	require.NoError(t, a.Send(ctx, members[2], layer.Message{"text": "still fine"}))
	_, m, err = a.Receive(ctx, members[2])
	require.NoError(t, err)
	require.Equal(t, "still fine", m["text"])

	// When the last member leaves, the group's exchange goes; a later
	// GroupAdd brings it back.
	for _, ch := range append(members, "worker") {
		require.NoError(t, a.GroupDiscard(ctx, "room", ch))
	}
	require.False(t, exchangeExists(t, raw, groupExchange(ns, "room")), "the group's exchange went with its last member")
	require.True(t, exchangeExists(t, raw, memberName(ns, "other-room", members[0])), "a membership of another group stays")
	require.NoError(t, a.SendGroup(ctx, "room", layer.Message{"text": "nobody"}))
	require.NoError(t, a.GroupAdd(ctx, "room", members[1]))
	require.NoError(t, b.SendGroup(ctx, "room", layer.Message{"text": "back"}))
	_, m, err = a.Receive(ctx, members[1])
	require.NoError(t, err)
	require.Equal(t, "back", m["text"])
	require.NoError(t, a.GroupDiscard(ctx, "room", members[1]))
	require.NoError(t, a.GroupDiscard(ctx, "other-room", members[0]))
}

// A group reaches a member through an exchange-to-exchange binding, from the
// group's fanout exchange to the membership's auto-delete fanout exchange,
// which is bound to the membership's queue: remove that binding behind the
// layer's back and the member gets nothing; GroupAdd puts it back. Deleting
// the membership's queue (as its expiry does) takes the membership's
// exchange, its binding from the group and, with the last member, the
// group's exchange.
func TestGroupMembershipIsAnExchangeBinding(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	l := newLayer(t, layer.Config{Namespace: ns, GroupExpiry: time.Minute})
	raw := rawChannel(t, "")
	ctx := ctxFor(t, 30*time.Second)
	g, mx, my := groupExchange(ns, "g"), memberName(ns, "g", "x"), memberName(ns, "g", "y")

	require.NoError(t, l.GroupAdd(ctx, "g", "x"))
	require.NoError(t, l.GroupAdd(ctx, "g", "y"))
	require.True(t, exchangeExists(t, raw, g))
	require.True(t, exchangeExists(t, raw, mx), "a membership has an exchange")
	require.True(t, queueExists(t, raw, mx), "and a queue")
	// The membership's exchange is a fanout that auto-deletes: the
	// broker refuses a declaration that says otherwise.
	err := raw.ExchangeDeclare(ctx, amqp.ExchangeDeclare{Exchange: mx, Type: "fanout"})
	require.ErrorIs(t, err, amqp.ErrPreconditionFailed)
	require.NoError(t, raw.ExchangeDeclare(ctx, amqp.ExchangeDeclare{Exchange: mx, Type: "fanout", AutoDelete: true}))

	// receive reports whether each channel got the message.
	receive := func(text string) (x, y bool) {
		t.Helper()
		got := func(ch string) bool {
			rctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			defer cancel()
			_, m, err := l.Receive(rctx, ch)
			if errors.Is(err, context.DeadlineExceeded) {
				return false
			}
			require.NoError(t, err)
			require.Equal(t, text, m["text"])
			return true
		}
		return got("x"), got("y")
	}
	require.NoError(t, l.SendGroup(ctx, "g", layer.Message{"text": "both"}))
	x, y := receive("both")
	require.True(t, x)
	require.True(t, y)

	require.NoError(t, raw.ExchangeUnbind(ctx, amqp.ExchangeUnbind{Source: g, Destination: mx}))
	require.NoError(t, l.SendGroup(ctx, "g", layer.Message{"text": "unbound"}))
	x, y = receive("unbound")
	require.False(t, x, "without its exchange-to-exchange binding, x is out of the group")
	require.True(t, y)

	require.NoError(t, l.GroupAdd(ctx, "g", "x"), "binds again")
	require.NoError(t, l.SendGroup(ctx, "g", layer.Message{"text": "rebound"}))
	x, y = receive("rebound")
	require.True(t, x)
	require.True(t, y)

	// The broker's cascade, which expiry relies on: the queue goes, so
	// does its binding from the membership's exchange, so does that
	// exchange (auto-delete, no binding left), so does its binding from
	// the group.
	_, err = raw.QueueDelete(ctx, amqp.QueueDelete{Queue: mx})
	require.NoError(t, err)
	require.False(t, exchangeExists(t, raw, mx), "the membership's exchange went with its queue")
	require.True(t, exchangeExists(t, raw, g), "the group still has y")
	_, err = raw.QueueDelete(ctx, amqp.QueueDelete{Queue: my})
	require.NoError(t, err)
	require.False(t, exchangeExists(t, raw, my))
	require.False(t, exchangeExists(t, raw, g), "the group's exchange went with its last member")
	require.NoError(t, l.SendGroup(ctx, "g", layer.Message{"text": "nobody"}))
	x, y = receive("nobody")
	require.False(t, x)
	require.False(t, y)
}

// A full member misses group messages without failing SendGroup.
func TestSendGroupSkipsFullMembers(t *testing.T) {
	t.Parallel()
	l := newLayer(t, layer.Config{Namespace: namespace(t), Capacity: 2, GroupExpiry: time.Minute})
	ctx := ctxFor(t, 30*time.Second)
	require.NoError(t, l.GroupAdd(ctx, "g", "full"))
	require.NoError(t, l.GroupAdd(ctx, "g", "empty"))
	require.NoError(t, l.Send(ctx, "full", layer.Message{"n": 1}))
	require.NoError(t, l.Send(ctx, "full", layer.Message{"n": 2}))
	require.ErrorIs(t, l.Send(ctx, "full", layer.Message{"n": 3}), layer.ErrChannelFull)
	require.NoError(t, l.SendGroup(ctx, "g", layer.Message{"n": 4}))
	_, m, err := l.Receive(ctx, "empty")
	require.NoError(t, err)
	require.Equal(t, int64(4), m["n"])
	for _, want := range []int64{1, 2} {
		_, m, err := l.Receive(ctx, "full")
		require.NoError(t, err)
		require.Equal(t, want, m["n"])
	}
	_, _, ok, err := l.TryReceive(ctx, "full")
	require.NoError(t, err)
	require.False(t, ok, "the group message did not fit")
	require.NoError(t, l.GroupDiscard(ctx, "g", "full"))
	require.NoError(t, l.GroupDiscard(ctx, "g", "empty"))
}

// Membership lapses GroupExpiry after the last GroupAdd, as every layer
// sees it: one layer adds, another sends.
func TestGroupExpiry(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	const expiry = 2 * time.Second
	adder := newLayer(t, layer.Config{Namespace: ns, GroupExpiry: expiry})
	sender := newLayer(t, layer.Config{Namespace: ns, GroupExpiry: expiry})
	raw := rawChannel(t, "")
	ctx := ctxFor(t, 30*time.Second)

	send := func(text string) {
		t.Helper()
		require.NoError(t, sender.SendGroup(ctx, "lapsing", layer.Message{"text": text}))
	}
	// got reports whether the message reached the channel within wait: a
	// group message gets there through the broker's dead-lettering, a
	// moment after SendGroup returns.
	got := func(ch, text string, wait time.Duration) bool {
		t.Helper()
		rctx, cancel := context.WithTimeout(ctx, wait)
		defer cancel()
		_, m, err := adder.Receive(rctx, ch)
		if errors.Is(err, context.DeadlineExceeded) {
			return false
		}
		require.NoError(t, err)
		require.Equal(t, text, m["text"])
		return true
	}

	start := time.Now()
	require.NoError(t, adder.GroupAdd(ctx, "lapsing", "kept"))
	require.NoError(t, adder.GroupAdd(ctx, "lapsing", "dropped"))
	send("t0")
	require.True(t, got("kept", "t0", 5*time.Second))
	require.True(t, got("dropped", "t0", 5*time.Second))

	time.Sleep(time.Until(start.Add(time.Second)))
	require.NoError(t, adder.GroupAdd(ctx, "lapsing", "kept"), "renews the membership")
	renewed := time.Now()

	// 2.5 s: "dropped" lapsed 0.5 s ago, "kept" has 0.5 s left.
	time.Sleep(time.Until(start.Add(expiry + 500*time.Millisecond)))
	send("t2.5")
	require.True(t, got("kept", "t2.5", 5*time.Second), "renewed %v ago", time.Since(renewed))
	require.False(t, got("dropped", "t2.5", 300*time.Millisecond), "lapsed %v after its only GroupAdd", time.Since(start))
	// Nothing of the lapsed membership is left on the broker: its queue
	// expired, and its exchange, with its binding from the group, went
	// with it.
	dropped := memberName(ns, "lapsing", "dropped")
	require.False(t, queueExists(t, raw, dropped))
	require.False(t, exchangeExists(t, raw, dropped), "the lapsed membership's exchange is gone")
	require.True(t, exchangeExists(t, raw, memberName(ns, "lapsing", "kept")))

	time.Sleep(time.Until(renewed.Add(expiry + 500*time.Millisecond)))
	send("t3.5")
	require.False(t, got("kept", "t3.5", 300*time.Millisecond), "lapsed %v after its last GroupAdd", time.Since(renewed))
	require.False(t, exchangeExists(t, raw, memberName(ns, "lapsing", "kept")))
	require.False(t, exchangeExists(t, raw, groupExchange(ns, "lapsing")), "the group's exchange went with its last membership")
}

func TestEncryption(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	ctx := ctxFor(t, 30*time.Second)
	alice := newLayer(t, layer.Config{Namespace: ns, SymmetricEncryptionKeys: []string{"key-one"}})
	same := newLayer(t, layer.Config{Namespace: ns, SymmetricEncryptionKeys: []string{"key-one"}})
	rotated := newLayer(t, layer.Config{Namespace: ns, SymmetricEncryptionKeys: []string{"key-two", "key-one"}})
	wrong := newLayer(t, layer.Config{Namespace: ns, SymmetricEncryptionKeys: []string{"key-three"}})
	plain := newLayer(t, layer.Config{Namespace: ns})

	secret := layer.Message{"text": "the eagle lands at dawn"}
	require.NoError(t, alice.Send(ctx, "secrets", secret))
	_, m, err := same.Receive(ctx, "secrets")
	require.NoError(t, err)
	require.Equal(t, secret, m)

	// Other keys cannot read it; the message is consumed and reported.
	require.NoError(t, alice.Send(ctx, "secrets", secret))
	ch, m, err := wrong.Receive(ctx, "secrets")
	require.ErrorIs(t, err, layer.ErrDecrypt)
	var me *layer.MessageError
	require.ErrorAs(t, err, &me)
	require.Equal(t, "secrets", me.Channel)
	require.Equal(t, "secrets", ch)
	require.Nil(t, m)

	// Neither can a layer without keys: the body is a Fernet token, not msgpack.
	require.NoError(t, alice.Send(ctx, "secrets", secret))
	_, _, err = plain.Receive(ctx, "secrets")
	require.ErrorIs(t, err, layer.ErrDecode)
	require.NotContains(t, err.Error(), "eagle")

	// And a keyed layer refuses plain messages.
	require.NoError(t, plain.Send(ctx, "secrets", layer.Message{"text": "plain"}))
	_, _, ok, err := alice.TryReceive(ctx, "secrets")
	require.True(t, ok)
	require.ErrorIs(t, err, layer.ErrDecrypt)

	// Rotation: the rotated layer reads the old key's messages and writes
	// with its first key, which the old layer cannot read.
	require.NoError(t, alice.Send(ctx, "secrets", secret))
	_, m, err = rotated.Receive(ctx, "secrets")
	require.NoError(t, err)
	require.Equal(t, secret, m)
	require.NoError(t, rotated.Send(ctx, "secrets", layer.Message{"text": "new key"}))
	_, _, err = alice.Receive(ctx, "secrets")
	require.ErrorIs(t, err, layer.ErrDecrypt)

	// Group messages are encrypted too.
	require.NoError(t, same.GroupAdd(ctx, "cell", "agent"))
	require.NoError(t, alice.SendGroup(ctx, "cell", secret))
	_, m, err = same.Receive(ctx, "agent")
	require.NoError(t, err)
	require.Equal(t, secret, m)
	require.NoError(t, same.GroupDiscard(ctx, "cell", "agent"))
}

func TestClose(t *testing.T) {
	t.Parallel()
	needBroker(t)
	l, err := layer.New(ctxFor(t, 10*time.Second), layer.Config{URL: brokerURL(), Namespace: namespace(t)})
	require.NoError(t, err)
	ctx := ctxFor(t, 10*time.Second)
	done := make(chan error, 1)
	go func() {
		_, _, err := l.Receive(ctx, "waiting")
		done <- err
	}()
	time.Sleep(200 * time.Millisecond)
	require.NoError(t, l.Close(ctx))
	require.Error(t, <-done, "a Receive in progress ends")
	require.NoError(t, l.Close(ctx), "idempotent")
	require.ErrorIs(t, l.Send(ctx, "x", layer.Message{}), layer.ErrClosed)
	_, _, err = l.Receive(ctx, "x")
	require.ErrorIs(t, err, layer.ErrClosed)
	_, err = l.NewChannel(ctx, "x")
	require.ErrorIs(t, err, layer.ErrClosed)
}

func TestNewFails(t *testing.T) {
	t.Parallel()
	ctx := ctxFor(t, 10*time.Second)
	_, err := layer.New(ctx, layer.Config{URL: "amqp://guest:guest@127.0.0.1:1/"})
	require.Error(t, err)
	_, err = layer.New(ctx, layer.Config{URL: "amqp://guest:guest@127.0.0.1/?unknown=1"})
	require.Error(t, err)
	_, err = layer.New(ctx, layer.Config{})
	require.Error(t, err)
}

// Flush removes every channel, message, group and membership of the
// namespace, whichever layer made them, and nothing of another namespace.
func TestFlush(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	a := newLayer(t, layer.Config{Namespace: ns})
	b := newLayer(t, layer.Config{Namespace: ns})
	other := newLayer(t, layer.Config{Namespace: namespace(t) + "o"})
	ctx := ctxFor(t, 30*time.Second)
	require.NoError(t, a.Send(ctx, "c1", layer.Message{"n": 1}))
	require.NoError(t, b.Send(ctx, "c2", layer.Message{"n": 2}))
	require.NoError(t, b.GroupAdd(ctx, "g", "c3"))
	require.NoError(t, other.Send(ctx, "c1", layer.Message{"kept": true}))
	raw := rawChannel(t, "")
	require.True(t, exchangeExists(t, raw, groupExchange(ns, "g")))

	require.NoError(t, a.Flush(ctx))
	for _, q := range []string{ns + ":channel:c1", ns + ":channel:c2", ns + ":channel:c3", memberName(ns, "g", "c3")} {
		require.False(t, queueExists(t, raw, q), q)
	}
	require.False(t, exchangeExists(t, raw, groupExchange(ns, "g")))
	require.False(t, exchangeExists(t, raw, memberName(ns, "g", "c3")))

	// The layers go on: a Send declares its channel again.
	require.NoError(t, b.Send(ctx, "c1", layer.Message{"n": 3}))
	_, m, err := a.Receive(ctx, "c1")
	require.NoError(t, err)
	require.Equal(t, int64(3), m["n"], "the message from before the flush is gone")
	_, m, ok, err := other.TryReceive(ctx, "c1")
	require.NoError(t, err)
	require.True(t, ok, "another namespace keeps its own")
	require.Equal(t, true, m["kept"])

	// A layer of the namespace with other expiries (its registry arguments
	// differ) still works, and its channels are flushed too.
	c := newLayer(t, layer.Config{Namespace: ns, Expiry: 7 * time.Second, GroupExpiry: time.Hour})
	require.NoError(t, c.Send(ctx, "c9", layer.Message{}))
	require.NoError(t, a.Flush(ctx))
	require.False(t, queueExists(t, raw, ns+":channel:c9"))
}

// The registry that Flush reads holds one entry per name while it lives,
// not one per call: a site adding the same channel to a group on every
// websocket connect must not grow it without bound.
func TestFlushRegistryDoesNotGrowWithRepeatedCalls(t *testing.T) {
	t.Parallel()
	ctx := ctxFor(t, 60*time.Second)
	ns := namespace(t)
	l := newLayer(t, layer.Config{Namespace: ns})
	for range 20 {
		require.NoError(t, l.GroupAdd(ctx, "lobby", "ws.one"))
		require.NoError(t, l.Send(ctx, "ws.one", layer.Message{"type": "x"}))
	}
	raw := rawChannel(t, "")
	ok, err := raw.QueueDeclare(ctx, amqp.QueueDeclare{Queue: ns + ":registry", Passive: true})
	require.NoError(t, err)
	require.LessOrEqual(t, ok.MessageCount, uint32(2), "one registration per name, not per call")
	require.NotZero(t, ok.MessageCount, "the names are registered")
	require.NoError(t, l.Flush(ctx))
	require.False(t, queueExists(t, raw, ns+":channel:ws.one"), "Flush still finds what was registered")
}
