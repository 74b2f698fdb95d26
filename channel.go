package amqp

import (
	"sync"
	"sync/atomic"
)

// Channel is an AMQP channel: a lightweight session multiplexed on a
// connection. It is safe for concurrent use: several goroutines may call
// methods at once and each gets its own reply, because replies are matched to
// requests in order.
//
// When the server closes the channel with a soft error (such as 404
// NOT_FOUND from a passive declare, or 406 PRECONDITION_FAILED), the call that
// caused it returns the [*Error], and the library answers close-ok, reopens
// the same channel number and re-applies its qos and confirm mode, so the same
// *Channel serves the next call. Consumers on it end with the error and
// outstanding publisher confirmations resolve with it; deliveries received
// before the reopen can no longer be acknowledged ([ErrStaleDelivery]).
//
// Lock order (docs/ARCHITECTURE.md, "Locks", has the whole of it): mu comes
// first; under it a goroutine may take one of a Consumer's mu, a
// Confirmation's mu, the deliveryTraces mu or the writer's mu (every frame of
// the channel is appended under mu), and the events queue's mu, innermost of
// all; never the other way round, and never two channels' mu at once.
// Connection.chMu, the topology's and the recovery state's mutexes are never
// held together with mu. Nothing waits
// (for ctx, a reply, room, a recovery) or runs user code while holding mu.
// link and epoch are stored under mu and read without it.
type Channel struct {
	conn *Connection
	id   uint16
	// link is the socket incarnation the channel is open on. It changes only
	// under mu, when the channel is reattached after a connection recovery;
	// nil while the channel waits for a new one.
	link atomic.Pointer[link]

	mu        sync.Mutex
	calls     callQueue             // pending synchronous calls, in request order
	state     channelState          // see channelState
	err       error                 // why the channel ended; set before done is closed
	done      chan struct{}         // closed when the channel ends for good
	epoch     atomic.Pointer[epoch] // replaced (under mu) whenever delivery tags restart; deliveries point at theirs
	recovered chan struct{}         // while recovering: closed when the channel is usable again

	// State re-applied when the channel is reopened after a channel error.
	prefetch       *BasicQos      // last basic.qos with global=false (per consumer)
	globalPrefetch *BasicQos      // last basic.qos with global=true (per channel)
	confirmMode    bool           // confirm.select was sent
	txMode         bool           // tx.select was sent (re-applied by a connection recovery, not after a channel error)
	txWork         bool           // a publish or acknowledgement was sent in the open transaction
	txLost         bool           // a recovery discarded the open transaction's work: the next commit fails
	txSettled      []uint64       // tags settled in the open transaction, unsettled again by a rollback
	rollbacks      fifo[[]uint64] // per tx.rollback awaiting its rollback-ok: the tags it will unsettle

	consumers    map[string]*Consumer // by consumer tag
	lastConsumer *Consumer            // the last delivery's consumer: most deliveries go to the same one
	confirms     confirmTracker
	settle       tagWindow // which delivery tags of this epoch are still unsettled
	// confirmProgress is closed (and cleared) whenever confirmations resolve,
	// waking Confirmation.Wait calls; created by the first waiter.
	confirmProgress chan struct{}
	confirmFailures confirmFailures // failed publishes no WaitConfirms has reported yet
	flow            gate            // shut while the server paused publishing (channel.flow active=false)

	opened        bool         // open-ok arrived (on the current link)
	reopenPending int          // replies of the reopen after a channel error still to come
	abandoned     bool         // the Channel call that opened it gave up
	owner         channelOwner // the application's or the library's own (see channelOwner)

	republish []*Confirmation // unconfirmed publishes kept across a connection loss (RecoveryConfig.Republish)

	listeners      channelListeners // guarded by mu
	allowImmediate atomic.Bool

	reader channelReader // the reader goroutine's side: frame handling, content assembly

	spareCall atomic.Pointer[pendingCall] // a completed call's entry and reply channel, for the next call

	traces *deliveryTraces // unsettled deliveries' trace contexts; nil without a DeliveryTracer
}

type channelState uint8

const (
	chOpen       channelState = iota // usable
	chReopening                      // reopened after a server close; calls queue behind the reopen
	chRecovering                     // its connection is being recovered; calls wait for recovered
	chClosing                        // Close sent channel.close; no new calls
	chClosed                         // ended for good
)

// ID returns the channel number.
func (ch *Channel) ID() uint16 { return ch.id }

// Connection returns the connection the channel belongs to.
func (ch *Channel) Connection() *Connection { return ch.conn }

// Done returns a channel that is closed when the channel has ended for good:
// closed by Close, by its connection ending, or by a failure to reopen after a
// channel error. A channel error that was recovered from does not close it.
func (ch *Channel) Done() <-chan struct{} { return ch.done }

// Err returns nil while the channel is usable, and afterwards why it ended.
func (ch *Channel) Err() error {
	select {
	case <-ch.done:
		return ch.err
	default:
		return nil
	}
}

// OnError registers fn to be told of each channel error the channel
// recovered from (the server's channel.close, after which it was reopened).
// The failing call also returns the error; fn is for errors caused by
// asynchronous methods such as a publish to a missing exchange. Calls run in
// order on the connection's callback goroutine.
func (ch *Channel) OnError(fn func(*Error)) {
	ch.mu.Lock()
	ch.listeners.onError = append(ch.listeners.onError, fn)
	ch.mu.Unlock()
}

type channelListeners struct {
	onError  []func(*Error)
	onReturn []func(Return)
	onAck    []func(deliveryTag uint64, multiple bool)
	onNack   []func(deliveryTag uint64, multiple bool)
	onFlow   []func(active bool)
}

// channelOwner says whose a channel is.
type channelOwner uint8

const (
	// appChannel is the application's: a connection recovery reopens it,
	// and the topology declared on it is recorded.
	appChannel channelOwner = iota
	// libraryChannel is the library's own (a recovery's topology replay, a
	// resubscription's passive declare): a connection recovery ends it
	// rather than reopening it, and declarations on it are not recorded.
	libraryChannel
)

// newChannel makes the Channel for number id, not yet in the channel table.
func newChannel(c *Connection, id uint16) *Channel {
	ch := &Channel{conn: c, id: id, done: make(chan struct{}), consumers: map[string]*Consumer{}}
	ch.reader.ch = ch
	ch.newEpochLocked()
	if c.tr.delivery != nil {
		ch.traces = &deliveryTraces{t: c.tr.delivery}
	}
	return ch
}
