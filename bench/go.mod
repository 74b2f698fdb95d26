module github.com/amqp-go/amqp/bench

go 1.25

require (
	github.com/amqp-go/amqp v0.0.0
	github.com/rabbitmq/amqp091-go v1.16.0
)

replace github.com/amqp-go/amqp => ../
