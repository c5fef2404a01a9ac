// Package eventlog is the chat's log on Kafka, through franz-go: the names of
// every topic (topics.go), the client options every role shares (acks=all,
// idempotent producer, read-committed consumers), topic creation, the
// appender the gateway writes with, and the embedded broker (kfake) of the
// single-process mode, which at start aborts with real markers the
// transactions a killed process left open (recover.go). The clients of the
// broker's own process reach it in memory (Embedded.Dial, pipe.go): the
// same Kafka protocol, without a socket's system calls for every request
// and response; other processes reach it over TCP.
package eventlog
