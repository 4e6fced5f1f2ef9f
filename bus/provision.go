package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Provision creates or updates the streams, the state bucket and the object
// store. It is idempotent: every hubd calls it at start.
func Provision(ctx context.Context, js jetstream.JetStream, replicas int) error {
	if replicas < 1 {
		replicas = 1
	}
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        EventsStream,
		Description: "every kojibus state change, protonmsg addresses",
		Subjects:    []string{EventPrefix + ">"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
		MaxAge:      90 * 24 * time.Hour,
		Duplicates:  10 * time.Minute,
	}); err != nil {
		return fmt.Errorf("provision stream %s: %w", EventsStream, err)
	}
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        TasksStream,
		Description: "task work queue: koji.tasks.<channel>.<arch> and koji.tasks.host.<id>",
		Subjects:    []string{TaskPrefix + ">"},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
		Duplicates:  10 * time.Minute,
		Discard:     jetstream.DiscardNew,
	}); err != nil {
		return fmt.Errorf("provision stream %s: %w", TasksStream, err)
	}
	// The state bucket is created as a stream with the KV layout, not through
	// CreateKeyValue: KV streams deny message deletes and that cannot be undone,
	// but the outbox relay deletes relayed entries so they leave no tombstones.
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:              "KV_" + StateBucket,
		Description:       "kojibus current state: transactions (outbox.*) and the keys the relay writes out",
		Subjects:          []string{"$KV." + StateBucket + ".>"},
		MaxMsgsPerSubject: 1,
		Discard:           jetstream.DiscardNew,
		Storage:           jetstream.FileStorage,
		Replicas:          replicas,
		AllowRollup:       true,
		AllowDirect:       true,
		DenyDelete:        false,
		// idempotency records expire
		AllowMsgTTL: true,
		Duplicates:  2 * time.Minute,
	}); err != nil {
		return fmt.Errorf("provision bucket %s: %w", StateBucket, err)
	}
	if _, err := js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket:      TaskOutputStore,
		Description: "task output files: builders publish the chunks (UploadSubject), the hub writes an object's meta when it accepts the run",
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	}); err != nil && !errors.Is(err, jetstream.ErrBucketExists) {
		return fmt.Errorf("provision object store %s: %w", TaskOutputStore, err)
	}
	if _, err := js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket: RepoStore, Description: "generated repo content", Storage: jetstream.FileStorage, Replicas: replicas,
	}); err != nil && !errors.Is(err, jetstream.ErrBucketExists) {
		return fmt.Errorf("provision object store %s: %w", RepoStore, err)
	}
	return nil
}

// TaskAckWait is how long a builder may hold a task message without an ack
// or InProgress; builders send InProgress every third of it.
const TaskAckWait = time.Minute

// TaskQueueConsumer is the durable pull consumer of one task queue subject,
// shared by every builder that may take its tasks. Whoever creates it (the
// relay before it queues the first task, the hub when a builder lists its
// queues) creates it with this one configuration.
func TaskQueueConsumer(name, subject string) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:         name,
		FilterSubject:   subject,
		AckPolicy:       jetstream.AckExplicitPolicy,
		AckWait:         TaskAckWait,
		MaxDeliver:      -1, // fencing, not delivery counts, decides who runs a task
		MaxAckPending:   10000,
		MaxRequestBatch: 1, // a builder takes one task per free slot, never a batch
		DeliverPolicy:   jetstream.DeliverAllPolicy,
	}
}
