package amqp

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// Handler processes one delivery for [Channel.Serve]. Returning nil
// acknowledges the delivery; returning an error rejects it, requeued or not
// as [ServeOptions].Requeue decides (by default requeued, unless the error
// wraps [ErrReject]). ctx carries the values of the ctx given to Serve and
// ends when the service is stopped before the handler could finish: when
// Shutdown's ctx ends, or when the consumer ends for another reason (its
// channel or connection closed), after which the delivery cannot be
// settled anyway. The handler must not settle d itself.
//
// A delivery whose content header could not be decoded (see
// [ContentError]) never reaches the handler: Serve rejects it without
// requeue (the broker dead-letters or drops it) and reports it to
// ServeOptions.OnError with its *ContentError (with
// ConsumerOptions.RejectMalformed the consumer rejects it itself, and
// OnError is not told).
type Handler func(ctx context.Context, d *Delivery) error

// ServeOptions configure [Channel.Serve].
type ServeOptions struct {
	// Workers is how many handlers may run at once, each on a goroutine of
	// its own that takes the next delivery when its handler returns. Zero
	// means 1.
	Workers int

	// Prefetch is the basic.qos prefetch count Serve sets on the channel
	// (per consumer, global false) before subscribing, so that the broker
	// sends no more unacknowledged deliveries than that: enough to keep
	// every worker fed without holding back messages other consumers could
	// take. Zero means twice Workers; a negative value leaves the channel's
	// qos as it is. Like any Qos, it applies to consumers the channel starts
	// afterwards and is re-applied when the channel is reopened or
	// recovered.
	Prefetch int

	// Requeue decides, for a delivery whose handler returned err (or
	// panicked: err is then a *PanicError), whether it is rejected with
	// requeue (true: the broker delivers it again, possibly to another
	// consumer) or without (false: dead-lettered or dropped). Nil means
	// requeue unless err wraps ErrReject. A message that fails every time
	// comes back for ever under that default; a Requeue such as
	//
	//	func(d *amqp.Delivery, err error) bool { return !d.Redelivered && !errors.Is(err, amqp.ErrReject) }
	//
	// retries each message once before dead-lettering it.
	Requeue func(d *Delivery, err error) bool

	// OnError, when set, is told of each handler error and panic, after
	// the delivery was settled, and of each settlement that failed (an
	// error wrapping the settlement's, such as ErrStaleDelivery for a
	// delivery from before a connection recovery, which the broker
	// delivers again). It runs on the worker's goroutine, which takes no
	// other delivery meanwhile.
	OnError func(d *Delivery, err error)

	// Consumer holds the options of the underlying consumer: Resubscribe to
	// keep serving after the server cancels the consumer, OnCancel, and
	// Recycle, with which Serve releases each delivery once settled (so the
	// handler must not keep d or its Body after returning).
	Consumer ConsumerOptions
}

// Service is a consumer whose deliveries are handled by a [Handler] on a pool
// of workers; [Channel.Serve] starts it. It is safe for concurrent use.
type Service struct {
	cons    *Consumer
	handler Handler
	opt     ServeOptions

	take           context.Context // Next's ctx: ends when the service stops taking deliveries
	stopTaking     context.CancelFunc
	handlerCtx     context.Context // the handlers' ctx
	cancelHandlers context.CancelFunc

	shuttingDown atomic.Bool
	cancelDone   chan struct{} // closed once Shutdown's basic.cancel has been answered, or failed
	cancelOnce   sync.Once
	cancelMu     sync.Mutex
	cancelErr    error // why the last basic.cancel could not be sent; guarded by cancelMu
	endOnce      sync.Once
	endErr       error // why the consumer ended, if not by Shutdown; set before the workers return
	done         chan struct{}
	err          error // set before done is closed
}

// Serve subscribes to a queue and handles its deliveries with h on
// opt.Workers goroutines until [Service.Shutdown] or the consumer's end. It
// sets the channel's prefetch (see [ServeOptions].Prefetch) and starts the
// consumer, bounded by ctx; ctx's values reach the handlers, but its end
// does not stop the service: Shutdown does.
//
// Each delivery is settled exactly once, by Serve: acknowledged when h
// returns nil, rejected (requeued or not, see ServeOptions.Requeue) when h
// returns an error or panics. A panic is recovered and reported to OnError
// as a *PanicError; the worker goes on.
//
// The service keeps working across a connection recovery (the consumer is
// subscribed again; deliveries from before the loss can no longer be
// settled and come again) and, with opt.Consumer.Resubscribe, across
// server cancels. It ends by itself when the consumer ends otherwise: see
// [Service.Done] and [Service.Err].
func (ch *Channel) Serve(ctx context.Context, args BasicConsume, h Handler, opt ServeOptions) (*Service, error) {
	if args.NoAck {
		return nil, ErrServeNoAck
	}
	if h == nil {
		return nil, errors.New("amqp: Serve needs a handler")
	}
	if opt.Workers < 0 {
		return nil, fmt.Errorf("amqp: Serve: %d workers", opt.Workers)
	}
	opt.Workers = max(opt.Workers, 1)
	if opt.Requeue == nil {
		opt.Requeue = requeueUnlessRejected
	}
	if opt.Prefetch == 0 {
		opt.Prefetch = 2 * opt.Workers
	}
	if opt.Prefetch > 0 {
		if opt.Prefetch > 0xffff {
			return nil, fmt.Errorf("amqp: Serve: prefetch %d is above basic.qos's 65535", opt.Prefetch)
		}
		if err := ch.Qos(ctx, BasicQos{PrefetchCount: uint16(opt.Prefetch)}); err != nil {
			return nil, err
		}
	}
	cons, err := ch.ConsumeWith(ctx, args, opt.Consumer)
	if err != nil {
		return nil, err
	}
	s := &Service{
		cons:       cons,
		handler:    h,
		opt:        opt,
		cancelDone: make(chan struct{}),
		done:       make(chan struct{}),
	}
	s.take, s.stopTaking = context.WithCancel(context.Background())
	s.handlerCtx, s.cancelHandlers = context.WithCancel(context.WithoutCancel(ctx))
	var workers sync.WaitGroup
	for range opt.Workers {
		workers.Go(s.work)
	}
	go func() {
		workers.Wait()
		s.finish()
	}()
	go s.watchEnd()
	return s, nil
}

func requeueUnlessRejected(_ *Delivery, err error) bool { return !errors.Is(err, ErrReject) }

// Consumer returns the service's consumer, for its tag.
func (s *Service) Consumer() *Consumer { return s.cons }

// Done returns a channel that is closed when the service has stopped: it
// takes no more deliveries, every handler has returned and its delivery
// has been settled, and the deliveries it held but did not handle have
// been given back.
func (s *Service) Done() <-chan struct{} { return s.done }

// Err returns nil while the service runs, and after it stopped nil if it
// was stopped by Shutdown or by the application (Channel.Close,
// Connection.Close; see [EndedByApplication]), or else the error that ended
// its consumer: a channel error, the connection's end, ErrCancelledByServer.
func (s *Service) Err() error {
	select {
	case <-s.done:
		return s.err
	default:
		return nil
	}
}

// Shutdown stops the service gracefully, bounded by ctx: it stops taking
// deliveries, cancels the consumer (basic.cancel) so the broker sends no
// more, gives back (rejects with requeue) the deliveries that were sent but
// not handled, lets the running handlers finish and settles their
// deliveries. It returns nil once all of that is done.
//
// If ctx ends first, Shutdown cancels the handlers' ctx and returns an error
// wrapping ctx's. The rest still happens, in the background: a handler that
// returns after that has its delivery settled, the cancel-ok is awaited, and
// what arrived before it is given back; Done tells when all of that is done
// (or the channel ended, which gives the server back whatever is unsettled).
// If basic.cancel cannot be sent (RecoveryConfig.FailFast during a
// recovery, say), it is tried again, with backoff, until it goes out or the
// consumer ends, and ctx's error is joined with the last such failure.
// Shutdown may be called more than once, and after the service ended by
// itself. It must not be called from a handler (or OnError) with a ctx that
// never ends: it waits for the running handlers, that one included.
func (s *Service) Shutdown(ctx context.Context) error {
	s.shuttingDown.Store(true)
	s.stopTaking()
	s.cancelOnce.Do(func() {
		// Not bounded by ctx: once basic.cancel is out, the deliveries sent
		// before its cancel-ok must still be given back. It ends with the
		// cancel-ok or with the channel.
		go func() {
			defer close(s.cancelDone)
			// Retried while it cannot be sent (with RecoveryConfig.FailFast
			// during a recovery, say) and the consumer runs on: a recovery
			// subscribes it again, and what it then receives must come back.
			for wait := 100 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
				err := s.cons.Cancel(context.Background()) // nil if the consumer has ended
				s.cancelMu.Lock()
				s.cancelErr = err
				s.cancelMu.Unlock()
				if err == nil {
					return
				}
				select {
				case <-s.cons.Done():
					return
				case <-time.After(wait):
				}
			}
		}()
	})
	for _, stopped := range []<-chan struct{}{s.done, s.cancelDone} { // (done may have closed before Shutdown)
		select {
		case <-stopped:
		case <-ctx.Done():
			s.cancelHandlers()
			s.cancelMu.Lock()
			cancelErr := s.cancelErr // why the consumer may still run
			s.cancelMu.Unlock()
			return fmt.Errorf("amqp: shutting down the service on queue %q: %w", s.cons.consumeArgs().Queue, errors.Join(ctx.Err(), cancelErr))
		}
	}
	return nil
}

// work is a worker: it takes deliveries and handles them until the service
// stops taking or the consumer ends.
func (s *Service) work() {
	for {
		d, err := s.cons.Next(s.take)
		if d != nil && err != nil {
			s.malformed(d, err)
			continue
		}
		if err != nil {
			if !errors.Is(err, context.Canceled) || s.take.Err() == nil { // the consumer ended, not our stop
				s.ended(err)
			}
			return
		}
		if s.take.Err() != nil {
			s.giveBack(d) // taken from the buffer while shutting down
			continue
		}
		s.handle(d)
	}
}

// watchEnd cancels the running handlers as soon as the consumer ends with
// its channel or connection, rather than when an idle worker notices: with
// every worker busy, none would, and a handler waiting on its ctx would wait
// for ever. It exits with the service.
func (s *Service) watchEnd() {
	select {
	case <-s.cons.Done():
		if err := s.cons.Err(); !errors.Is(err, ErrConsumerCancelled) && !errors.Is(err, ErrCancelledByServer) {
			s.cancelHandlers() // the channel is gone: their deliveries cannot be settled
		}
	case <-s.done:
	}
}

// ended records why the consumer ended, once. Handlers still running are
// cancelled unless the end is the service's own cancel (or any cancel that
// leaves the channel open, where their deliveries can still be settled).
func (s *Service) ended(err error) {
	s.endOnce.Do(func() {
		s.endErr = err
		if !errors.Is(err, ErrConsumerCancelled) && !errors.Is(err, ErrCancelledByServer) {
			s.cancelHandlers() // the channel is gone: their deliveries cannot be settled
		}
		s.stopTaking()
	})
}

// handle runs the handler on d and settles d by its outcome.
func (s *Service) handle(d *Delivery) {
	herr := s.run(d)
	var serr error
	if herr == nil {
		serr = d.Ack(AckOptions{})
	} else {
		serr = d.Reject(RejectOptions{Requeue: s.opt.Requeue(d, herr)})
	}
	if s.opt.OnError != nil {
		if herr != nil {
			s.opt.OnError(d, herr)
		}
		if serr != nil {
			s.opt.OnError(d, fmt.Errorf("amqp: settling delivery %d after its handler: %w", d.DeliveryTag, serr))
		}
	}
	d.Release() // does nothing unless opt.Consumer.Recycle
}

// run calls the handler, turning a panic into a *PanicError.
func (s *Service) run(d *Delivery) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &PanicError{Value: v, Stack: debug.Stack()}
		}
	}()
	return s.handler(d.TraceContext(s.handlerCtx), d) // under the delivery's span, with a DeliveryTracer
}

// malformed rejects, without requeue, a delivery whose content header could
// not be decoded (err is its *ContentError): no handler can make sense of
// it, and it would come back the same every time.
func (s *Service) malformed(d *Delivery, err error) {
	serr := d.Reject(RejectOptions{})
	if s.opt.OnError != nil {
		s.opt.OnError(d, err)
		if serr != nil {
			s.opt.OnError(d, fmt.Errorf("amqp: rejecting malformed delivery %d: %w", d.DeliveryTag, serr))
		}
	}
}

// giveBack rejects with requeue a delivery no handler will see.
func (s *Service) giveBack(d *Delivery) {
	if err := d.Reject(RejectOptions{Requeue: true}); err != nil && s.opt.OnError != nil && !errors.Is(err, ErrStaleDelivery) {
		s.opt.OnError(d, fmt.Errorf("amqp: giving back delivery %d: %w", d.DeliveryTag, err))
	}
	d.Release()
}

// finish runs once every worker has returned: it gives back what is left
// in the consumer's buffer and ends the service.
func (s *Service) finish() {
	if s.shuttingDown.Load() {
		<-s.cancelDone // after cancel-ok no more deliveries come
	}
	// Next returns what is buffered before it looks at its (ended) ctx.
	for {
		d, err := s.cons.Next(s.take)
		if d == nil {
			break
		}
		if err != nil {
			s.malformed(d, err)
			continue
		}
		s.giveBack(d)
	}
	s.cancelHandlers() // every handler has returned: this only frees the ctx
	if err := s.endErr; err != nil && !EndedByApplication(err) {
		s.err = err
	}
	close(s.done)
}
