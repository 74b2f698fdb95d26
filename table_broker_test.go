package amqp_test

import (
	"math"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/stretchr/testify/require"
)

func TestEveryTableTypeAndPropertyRoundTrip(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	q := tempQueue(t, ch, nil)
	ts := time.Date(2026, 11, 22, 10, 30, 0, 0, time.UTC)
	headers := amqp.Table{
		"bool": true, "int8": int8(-8), "uint8": uint8(200), "int16": int16(-1600),
		"uint16": uint16(60000), "int32": int32(-320000), "uint32": uint32(4000000000),
		"int64": int64(math.MinInt64), "float32": float32(1.5), "float64": 2.25,
		"decimal": amqp.Decimal{Scale: 2, Value: 1234}, "string": "héllo", "bytes": []byte{0, 1, 2},
		"array":  []any{int32(1), "two", true, nil},
		"time":   ts,
		"table":  amqp.Table{"nested": amqp.Table{"deep": "yes"}},
		"void":   nil,
		"empty":  "",
		"emptyA": []any{},
	}
	props := amqp.Properties{
		ContentType: "application/json", ContentEncoding: "gzip", Headers: headers,
		DeliveryMode: 2, Priority: 5, CorrelationID: "corr", ReplyTo: "reply",
		Expiration: "60000", MessageID: "id-1", Timestamp: ts, Type: "kind",
		UserID: "guest", AppID: "app", ClusterID: "",
	}
	_, err := ch.Publish(testCtx(t), amqp.Publishing{RoutingKey: q, Properties: props, Body: []byte("{}")})
	require.NoError(t, err)
	d := getEventually(t, ch, q)
	require.Equal(t, props, d.Properties, "every property and table type read back unchanged")
}
