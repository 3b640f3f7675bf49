// Package chdb is the embedded storage engine: the ClickHouse engine running
// inside the flowtrace process through chDB (github.com/chdb-io/chdb-go), with
// its data in a local directory.
package chdb

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	chdbpurego "github.com/chdb-io/chdb-go/chdb-purego"

	// Must be imported before chdb-go's binding initializes; see its doc.
	"github.com/flowtrace/flowtrace/storage/chdb/internal/libchdb"
	"github.com/flowtrace/flowtrace/storage/chstore"
)

// ErrInUse is returned by Open while another embedded session is open: chDB
// runs one session per process.
var ErrInUse = errors.New("an embedded ClickHouse session is already open in this process")

var errClosed = errors.New("embedded ClickHouse session closed")

// LibraryVersion is the chDB release flowtrace is built and tested with.
const LibraryVersion = libchdb.Version

// LibraryPath is where libchdb.so was loaded from.
func LibraryPath() string { return libchdb.Path }

// openDir names the open session, if any: chDB allows one per process.
var (
	openMu  sync.Mutex
	openDir string
)

// conn is a chstore.Conn over the process's chDB session.
//
// chDB runs one statement at a time per session, and query parameters are
// session state (SET param_x), so mu serializes statements together with the
// parameters they use.
type conn struct {
	mu     sync.Mutex
	chconn chdbpurego.ChdbConn
	closed bool
	// insertFile carries each INSERT's Native data: chDB takes statements as C
	// strings, which cannot hold the NUL bytes of binary data.
	insertFile string
}

var _ chstore.Conn = (*conn)(nil)

// Open starts the embedded engine on the data directory dir, creating it if
// needed. An empty dir runs in memory. Only one session may be open per
// process at a time.
func Open(dir string) (chstore.Conn, error) {
	openMu.Lock()
	defer openMu.Unlock()
	if openDir != "" {
		return nil, fmt.Errorf("open %s: %w (%s)", dir, ErrInUse, openDir)
	}
	connString := ":memory:"
	insertFile := filepath.Join(os.TempDir(), fmt.Sprintf("flowtrace-chdb-%d.native", os.Getpid()))
	if dir != "" {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("open %s: %w", dir, err)
		}
		connString = dir
		insertFile = filepath.Join(dir, "insert.native")
	}
	chconn, err := chdbpurego.NewConnectionFromConnString(connString + engineOptions(dir))
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", connString, err)
	}
	c := &conn{chconn: chconn, insertFile: insertFile}
	// Times are read and written as UTC; JSON numbers stay numbers.
	if err := c.Exec(context.Background(), "SET session_timezone = 'UTC', output_format_json_quote_64bit_integers = 0", nil); err != nil {
		chconn.Close()
		return nil, fmt.Errorf("open %s: %w", connString, err)
	}
	openDir = connString
	return c, nil
}

// mergeNice is the Linux nice value of ClickHouse's merge threads. Merges
// are background work that can wait: at the default of 0, a large merge
// (five seconds of CPU for ten parts of 400,000 events) takes its share of a
// busy core from ingest for as long as it runs, and the ingest-to-queryable
// p99 over ten minutes at 30,000 spans/s on one core was 6.9 s. At 5 it was
// 2.0 s; at 40,000 spans/s over three minutes, 3.4 s against 6.2 s.
// Merges still get about a quarter of a contended core, so under overload
// flowtrace degrades gently: offered 50,000 spans/s, it accepted 48,621
// (40,706 at 0) with a p99 of 4.8 s (9.4 s at 0). At nice 10, a ninth,
// merges fell behind near saturation and parts piled up. It needs
// CAP_SYS_NICE; without it ClickHouse leaves the threads at 0.
const mergeNice = 5

// engineOptions are the engine's server settings, as chDB takes them after
// the path of an on-disk session.
func engineOptions(dir string) string {
	if dir == "" {
		return ""
	}
	return "?os_threads_nice_value_merge_mutate=" + strconv.Itoa(mergeNice)
}

func (c *conn) Exec(ctx context.Context, query string, params chstore.Params) error {
	_, err := c.run(ctx, query, params, "TabSeparated")
	return err
}

func (c *conn) Query(ctx context.Context, query string, params chstore.Params) ([]byte, error) {
	return c.run(ctx, query, params, "JSONEachRow")
}

// Insert hands the block to chDB as a Native file, the fastest way in:
// ClickHouse reads it column by column.
func (c *conn) Insert(ctx context.Context, insert *chstore.Insert) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var statement strings.Builder
	statement.WriteString("INSERT INTO ")
	statement.WriteString(insert.Table)
	statement.WriteString(" (")
	statement.WriteString(insert.Block.Names())
	statement.WriteString(") FROM INFILE '")
	statement.WriteString(quoteLiteral(c.insertFile))
	statement.WriteString("'")
	for i, s := range insert.Settings {
		if i == 0 {
			statement.WriteString(" SETTINGS ")
		} else {
			statement.WriteString(", ")
		}
		statement.WriteString(s.Name)
		statement.WriteString(" = '")
		statement.WriteString(quoteLiteral(s.Value))
		statement.WriteString("'")
	}
	statement.WriteString(" FORMAT Native")

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errClosed
	}
	if err := os.WriteFile(c.insertFile, insert.Native, 0o600); err != nil {
		return fmt.Errorf("stage insert: %w", err)
	}
	_, err := c.query(statement.String(), "TabSeparated")
	return err
}

func (c *conn) run(ctx context.Context, query string, params chstore.Params, format string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errClosed
	}
	if len(params) > 0 {
		if _, err := c.query(setParams(params), format); err != nil {
			return nil, fmt.Errorf("set query parameters: %w", err)
		}
	}
	return c.query(query, format)
}

// query runs one statement; the caller holds mu. The result is copied out of
// chDB's buffer, which is freed before returning.
func (c *conn) query(query, format string) ([]byte, error) {
	result, err := c.chconn.Query(query, format)
	if err != nil {
		return nil, err
	}
	if result == nil {
		return nil, nil
	}
	defer result.Free()
	if err := result.Error(); err != nil {
		return nil, err
	}
	buf := result.Buf()
	if len(buf) == 0 {
		return nil, nil
	}
	return append([]byte(nil), buf...), nil
}

func (c *conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	c.chconn.Close()
	_ = os.Remove(c.insertFile)
	openMu.Lock()
	openDir = ""
	openMu.Unlock()
	return nil
}

// setParams renders "SET param_a = '...', param_b = '...'". Values arrive in
// ClickHouse's escaped text form (chstore.Params); here they are quoted as
// string literals.
func setParams(params chstore.Params) string {
	names := make([]string, 0, len(params))
	for name := range params {
		names = append(names, name)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("SET ")
	for i, name := range names {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("param_")
		b.WriteString(name)
		b.WriteString(" = '")
		b.WriteString(quoteLiteral(params[name]))
		b.WriteByte('\'')
	}
	return b.String()
}

var literalEscaper = strings.NewReplacer(`\`, `\\`, `'`, `\'`, "\x00", `\0`)

func quoteLiteral(s string) string {
	return literalEscaper.Replace(s)
}

// Version reports the ClickHouse version of the embedded engine, from a
// short in-memory session. It fails while another session is open.
func Version() (string, error) {
	conn, err := Open("")
	if err != nil {
		return "", err
	}
	st, err := chstore.New(conn, chstore.Schema{Database: "default"})
	if err != nil {
		conn.Close()
		return "", err
	}
	defer st.Close()
	return st.EngineVersion(context.Background())
}
