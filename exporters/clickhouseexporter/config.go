package clickhouseexporter

import (
	"errors"
	"fmt"

	"go.opentelemetry.io/collector/config/configoptional"
	"go.opentelemetry.io/collector/config/configretry"
	"go.opentelemetry.io/collector/exporter/exporterhelper"

	"github.com/flowtrace/flowtrace/correlator/spanevent"
	"github.com/flowtrace/flowtrace/storage/flowstorage"
)

// Config is the ClickHouse exporter's configuration.
type Config struct {
	// Backend names the flowstorage backend to write to. Default "default".
	Backend string `mapstructure:"backend"`
	// Spans configures how spans are read into events, as for the
	// correlator connector. Default: the span adapter's defaults.
	Spans spanevent.Config `mapstructure:"spans"`
	// TimeoutConfig bounds each write (timeout). Default 30s.
	exporterhelper.TimeoutConfig `mapstructure:",squash"`
	// QueueConfig batches writes and holds them while storage is away;
	// with storage set to a storage extension (segment_storage, file_storage)
	// it survives a crash.
	// Default: on, 10 consumers... see README.
	QueueConfig configoptional.Optional[exporterhelper.QueueBatchConfig] `mapstructure:"sending_queue"`
	// BackOffConfig retries failed writes with exponential backoff. Default on.
	BackOffConfig configretry.BackOffConfig `mapstructure:"retry_on_failure"`
}

func createDefaultConfig() *Config {
	queue := exporterhelper.NewDefaultQueueConfig()
	return &Config{
		Backend:       flowstorage.DefaultBackend,
		TimeoutConfig: exporterhelper.NewDefaultTimeoutConfig(),
		QueueConfig:   configoptional.Some(queue),
		BackOffConfig: configretry.NewDefaultBackOffConfig(),
	}
}

// Validate checks the configuration; errors name the key.
func (c *Config) Validate() error {
	var errs []error
	if c.Backend == "" {
		errs = append(errs, errors.New("backend: must not be empty"))
	}
	if err := c.Spans.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("spans: %w", err))
	}
	if queue := c.QueueConfig.Get(); queue != nil && queue.Batch.HasValue() && queue.Batch.Get().Sizer != exporterhelper.RequestSizerTypeItems {
		errs = append(errs, fmt.Errorf("sending_queue::batch::sizer: batches are sized in items (rows), not %s", queue.Batch.Get().Sizer.String()))
	}
	return errors.Join(errs...)
}
