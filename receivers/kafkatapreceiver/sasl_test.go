package kafkatapreceiver

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	"go.opentelemetry.io/collector/config/configoptional"
)

// TestSASL taps a broker that requires SCRAM or PLAIN authentication.
func TestSASL(t *testing.T) {
	for _, mechanism := range []string{SASLScramSHA256, SASLScramSHA512, SASLPlain} {
		t.Run(mechanism, func(t *testing.T) {
			topic := "secure-" + runID()
			cluster := newCluster(t, kfake.SeedTopics(1, topic), kfake.EnableSASL(),
				kfake.Superuser(mechanism, "tap", "tap-secret"),
				kfake.Superuser(SASLScramSHA256, "app", "app-secret"))
			brokers := cluster.ListenAddrs()
			cfg := testConfig(brokers, topic)
			cfg.SASL = configoptional.Some(SASLConfig{Mechanism: mechanism, Username: "tap", Password: "tap-secret"})
			u := startTap(t, cfg)

			producer := newClient(t, brokers, kgo.SASL(scram.Auth{User: "app", Pass: "app-secret"}.AsSha256Mechanism()))
			require.NoError(t, producer.ProduceSync(context.Background(), &kgo.Record{Topic: topic, Value: []byte("{}")}).FirstErr())
			u.waitSpans(t, 1)
			require.Zero(t, counter[int64](t, u, "flowtrace.tap.gaps"))
		})
	}
}
