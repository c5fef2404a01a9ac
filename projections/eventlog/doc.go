// Package eventlog is the chat's log on Kafka, through franz-go: the names of
// every topic (topics.go), the client options every role shares (acks=all,
// idempotent producer, read-committed consumers), topic creation, the
// appender the gateway writes with, and the embedded broker (kfake) of the
// single-process mode, which at start aborts with real markers the
// transactions a killed process left open (recover.go).
package eventlog
