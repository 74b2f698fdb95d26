package layer_test

import (
	"context"
	"fmt"
	"log"
	"strconv"
	"time"

	"github.com/amqp-go/amqp/layer"
)

// A chat room: every connected user has a channel of their own, all of them
// are in the room's group, and a message sent to the group reaches each of
// them. It runs against a RabbitMQ on localhost.
func Example_chatRoom() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := layer.New(ctx, layer.Config{URL: "amqp://guest:guest@localhost:5672/%2F"})
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close(ctx)

	// A room of its own, so that runs of this example never meet.
	room := "lobby." + strconv.FormatInt(time.Now().UnixNano(), 36)

	// Each user connects: a channel for them, and a place in the room.
	users := []string{"alice", "bob", "carol"}
	inbox := map[string]string{}
	for _, user := range users {
		ch, err := l.NewChannel(ctx, "chat")
		if err != nil {
			log.Fatal(err)
		}
		inbox[user] = ch
		if err := l.GroupAdd(ctx, room, ch); err != nil {
			log.Fatal(err)
		}
	}

	// Alice speaks: everyone in the room hears it, Alice too.
	err = l.SendGroup(ctx, room, layer.Message{"from": "alice", "text": "hello, room"})
	if err != nil {
		log.Fatal(err)
	}
	for _, user := range users {
		_, msg, err := l.Receive(ctx, inbox[user])
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s hears %s: %s\n", user, msg["from"], msg["text"])
	}

	// Carol leaves; the room goes on without her.
	if err := l.GroupDiscard(ctx, room, inbox["carol"]); err != nil {
		log.Fatal(err)
	}
	err = l.SendGroup(ctx, room, layer.Message{"from": "bob", "text": "bye, carol"})
	if err != nil {
		log.Fatal(err)
	}
	for _, user := range []string{"alice", "bob"} {
		_, msg, err := l.Receive(ctx, inbox[user])
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s hears %s: %s\n", user, msg["from"], msg["text"])
	}
	if _, _, ok, _ := l.TryReceive(ctx, inbox["carol"]); !ok {
		fmt.Println("carol hears nothing")
	}

	// The others leave too.
	for _, user := range []string{"alice", "bob"} {
		if err := l.GroupDiscard(ctx, room, inbox[user]); err != nil {
			log.Fatal(err)
		}
	}
	// Output:
	// alice hears alice: hello, room
	// bob hears alice: hello, room
	// carol hears alice: hello, room
	// alice hears bob: bye, carol
	// bob hears bob: bye, carol
	// carol hears nothing
}

// A Go service in a Django Channels deployment whose CHANNEL_LAYERS use
// channels_rabbitmq ("BACKEND": "channels_rabbitmq.core.RabbitmqChannelLayer"
// with the same "host" URL): it pushes an event to a Django group, whose
// members are Django consumers' channels (and here its own channel too),
// and receives on a channel of its own, whose name Django consumers reply
// to with self.channel_layer.send(name, {...}). It runs against a RabbitMQ
// on localhost.
func Example_channelsRabbitMQ() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := layer.New(ctx, layer.Config{
		URL:  "amqp://guest:guest@localhost:5672/%2F",
		Mode: layer.ChannelsRabbitMQ,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close(ctx)

	// A channel of this process: "channels_<12 letters>!<12 letters>".
	inbox, err := l.NewChannel(ctx, "")
	if err != nil {
		log.Fatal(err)
	}
	// The group, as a Django consumer names it in group_add; one of its own
	// so that runs of this example never meet.
	room := "chat_lobby_" + strconv.FormatInt(time.Now().UnixNano(), 36)
	if err := l.GroupAdd(ctx, room, inbox); err != nil {
		log.Fatal(err)
	}

	// To every member of the group: Django's consumers get it in their
	// chat_message handler ("type": "chat.message"), and so does inbox.
	err = l.SendGroup(ctx, room, layer.Message{"type": "chat.message", "text": "hello from Go"})
	if err != nil {
		log.Fatal(err)
	}
	_, msg, err := l.Receive(ctx, inbox)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(msg["type"], msg["text"])

	// What a Django consumer that was handed inbox sends back; here the
	// program sends it itself.
	if err := l.Send(ctx, inbox, layer.Message{"type": "chat.reply", "text": "hi, Go"}); err != nil {
		log.Fatal(err)
	}
	_, msg, err = l.Receive(ctx, inbox)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(msg["type"], msg["text"])

	if err := l.GroupDiscard(ctx, room, inbox); err != nil {
		log.Fatal(err)
	}
	// Output:
	// chat.message hello from Go
	// chat.reply hi, Go
}
