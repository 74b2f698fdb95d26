module github.com/amqp-go/amqp/layer

go 1.25

require (
	github.com/amqp-go/amqp v0.0.0
	github.com/amqp-go/amqp/brokertest v0.0.0-00010101000000-000000000000
	github.com/fernet/fernet-go v0.0.0-20240119011108-303da6aec611
	github.com/stretchr/testify v1.12.1
	github.com/vmihailenco/msgpack/v5 v5.4.1
	go.uber.org/goleak v1.3.0
)

require (
	github.com/vmihailenco/tagparser/v2 v2.0.0 // indirect
	go.yaml.in/yaml/v3 v3.0.5 // indirect
)

replace (
	github.com/amqp-go/amqp => ../
	github.com/amqp-go/amqp/brokertest => ../brokertest
)
