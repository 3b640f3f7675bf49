package chstore

import (
	"bytes"
	"context"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/template"
	"time"
)

//go:embed schema/*.sql
var schemaFS embed.FS

// SchemaFS holds the migrations, one .sql file each, applied in file-name order.
func SchemaFS() fs.FS {
	sub, err := fs.Sub(schemaFS, "schema")
	if err != nil {
		panic(err) // the embedded directory is part of the binary
	}
	return sub
}

// migrationsTable records which migrations have been applied.
const migrationsTable = "schema_migrations"

var identifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Schema says where and how the tables are created.
type Schema struct {
	// Database holds every table.
	Database string
	// Cluster, when set, creates tables ON CLUSTER with Replicated engines and
	// puts Distributed tables in front of them.
	Cluster string
	// TTL drops data older than this; zero keeps it forever.
	TTL time.Duration
}

// Validate checks the names that end up in DDL, where they cannot be
// parameters.
func (s Schema) Validate() error {
	if !identifier.MatchString(s.Database) {
		return fmt.Errorf("database: %q is not a valid identifier", s.Database)
	}
	if s.Cluster != "" && !identifier.MatchString(s.Cluster) {
		return fmt.Errorf("cluster: %q is not a valid identifier", s.Cluster)
	}
	if s.TTL < 0 {
		return fmt.Errorf("ttl: must not be negative, got %s", s.TTL)
	}
	return nil
}

// name is the table that queries read and write: on a cluster the Distributed
// table, else the table itself.
func (s Schema) name(table string) string {
	return "`" + s.Database + "`.`" + table + "`"
}

// local is the table that holds the data: on a cluster the per-node table
// behind the Distributed one.
func (s Schema) local(table string) string {
	if s.Cluster == "" {
		return s.name(table)
	}
	return s.name(table + "_local")
}

func (s Schema) onCluster() string {
	if s.Cluster == "" {
		return ""
	}
	return "ON CLUSTER `" + s.Cluster + "`"
}

// engine renders a table engine, Replicated on a cluster.
func (s Schema) engine(name string, args ...string) string {
	if s.Cluster == "" {
		return name + "(" + strings.Join(args, ", ") + ")"
	}
	replicated := append([]string{"'/clickhouse/tables/{shard}/{database}/{table}'", "'{replica}'"}, args...)
	return "Replicated" + name + "(" + strings.Join(replicated, ", ") + ")"
}

func (s Schema) ttl(column string) string {
	if s.TTL <= 0 {
		return ""
	}
	seconds := int64(s.TTL / time.Second)
	return fmt.Sprintf("TTL toDateTime(%s) + INTERVAL %d SECOND", column, seconds)
}

// settings renders a table's SETTINGS clause: insert deduplication for
// non-replicated tables (replicated tables deduplicate by default), then any
// extra settings the table asks for.
func (s Schema) settings(extra ...string) string {
	var all []string
	if s.Cluster == "" {
		all = append(all, "non_replicated_deduplication_window = 1000")
	}
	all = append(all, extra...)
	if len(all) == 0 {
		return ""
	}
	return "SETTINGS " + strings.Join(all, ", ")
}

func (s Schema) distributed(table, shardingKey string) string {
	return s.distributedTable("CREATE TABLE IF NOT EXISTS", table, shardingKey)
}

// redistribute replaces the Distributed table in front of table with one
// sharded by shardingKey; a no-op without a cluster. The Distributed table
// holds no rows of its own (inserts go through it in the foreground), so
// nothing is lost.
func (s Schema) redistribute(table, shardingKey string) string {
	return s.distributedTable("CREATE OR REPLACE TABLE", table, shardingKey)
}

// distributedTable is the create statement of the Distributed table in
// front of table on a cluster; nothing without one.
func (s Schema) distributedTable(create, table, shardingKey string) string {
	if s.Cluster == "" {
		return ""
	}
	return fmt.Sprintf("%s %s %s AS %s ENGINE = Distributed(`%s`, `%s`, `%s`, %s)",
		create, s.name(table), s.onCluster(), s.local(table), s.Cluster, s.Database, table+"_local", shardingKey)
}

func (s Schema) funcs() template.FuncMap {
	return template.FuncMap{
		"name":         s.name,
		"table":        s.local,
		"onCluster":    s.onCluster,
		"engine":       s.engine,
		"ttl":          s.ttl,
		"settings":     s.settings,
		"distributed":  s.distributed,
		"redistribute": s.redistribute,
	}
}

// Migration is one schema step.
type Migration struct {
	Version    int
	Name       string
	Statements []string
}

// Migrations renders the migrations in src for this schema, in order. A file
// is named NNNN_name.sql and holds statements separated by ";" at line end.
func (s Schema) Migrations(src fs.FS) ([]Migration, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	files, err := fs.Glob(src, "*.sql")
	if err != nil {
		return nil, fmt.Errorf("list migrations: %w", err)
	}
	sort.Strings(files)
	var migrations []Migration
	seen := map[int]string{}
	for _, file := range files {
		base := strings.TrimSuffix(path.Base(file), ".sql")
		number, name, ok := strings.Cut(base, "_")
		version, err := strconv.Atoi(number)
		if !ok || err != nil || version <= 0 {
			return nil, fmt.Errorf("migration %s: name must be NNNN_name.sql", file)
		}
		if other, dup := seen[version]; dup {
			return nil, fmt.Errorf("migration %s: version %d already used by %s", file, version, other)
		}
		seen[version] = file
		text, err := fs.ReadFile(src, file)
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", file, err)
		}
		tmpl, err := template.New(file).Funcs(s.funcs()).Parse(string(text))
		if err != nil {
			return nil, fmt.Errorf("parse migration %s: %w", file, err)
		}
		var rendered bytes.Buffer
		if err := tmpl.Execute(&rendered, nil); err != nil {
			return nil, fmt.Errorf("render migration %s: %w", file, err)
		}
		migrations = append(migrations, Migration{Version: version, Name: name, Statements: splitStatements(rendered.String())})
	}
	return migrations, nil
}

// splitStatements splits on ";" at the end of a line and drops comments and
// empty statements.
func splitStatements(sql string) []string {
	var statements []string
	var current strings.Builder
	flush := func() {
		if stmt := strings.TrimSpace(current.String()); stmt != "" {
			statements = append(statements, stmt)
		}
		current.Reset()
	}
	for _, line := range strings.Split(sql, "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "--") {
			continue
		}
		if strings.HasSuffix(trimmed, ";") {
			current.WriteString(strings.TrimSuffix(trimmed, ";"))
			flush()
			continue
		}
		current.WriteString(line)
		current.WriteByte('\n')
	}
	flush()
	return statements
}

// migrate creates the database and applies the migrations not yet recorded.
func (s *store) migrate(ctx context.Context) error {
	migrations, err := s.schema.Migrations(s.src)
	if err != nil {
		return err
	}
	bootstrap := []string{
		fmt.Sprintf("CREATE DATABASE IF NOT EXISTS `%s` %s", s.schema.Database, s.schema.onCluster()),
		fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s %s (version UInt32, name String, applied_at DateTime('UTC')) ENGINE = %s ORDER BY version",
			s.schema.local(migrationsTable), s.schema.onCluster(), s.schema.engine("ReplacingMergeTree")),
	}
	for _, stmt := range bootstrap {
		if err := s.conn.Exec(ctx, stmt, nil); err != nil {
			return fmt.Errorf("create migrations table: %w", err)
		}
	}
	type versionRow struct {
		Version int `json:"version"`
	}
	applied, err := selectRows(ctx, s, "SELECT DISTINCT version FROM "+s.schema.local(migrationsTable), nil,
		func(r *versionRow) int { return r.Version })
	if err != nil {
		return fmt.Errorf("read applied migrations: %w", err)
	}
	for _, m := range migrations {
		if slices.Contains(applied, m.Version) {
			continue
		}
		for _, stmt := range m.Statements {
			if err := s.conn.Exec(ctx, stmt, nil); err != nil {
				return fmt.Errorf("migration %04d_%s: %w", m.Version, m.Name, err)
			}
		}
		record := fmt.Sprintf("INSERT INTO %s (version, name, applied_at) VALUES ({version:UInt32}, {name:String}, now())", s.schema.local(migrationsTable))
		if err := s.conn.Exec(ctx, record, Params{"version": strconv.Itoa(m.Version), "name": escapeParam(m.Name)}); err != nil {
			return fmt.Errorf("record migration %04d_%s: %w", m.Version, m.Name, err)
		}
	}
	return nil
}
