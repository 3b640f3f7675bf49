// Package libchdb finds libchdb.so before chdb-go loads it.
//
// chdb-go opens the library in a package init function and panics when it is
// missing. This package runs its own init first and points CHDB_LIB_PATH at the
// library, or stops the program with an error that says how to get it. Go
// initializes packages in import-path order among those whose imports are
// ready; chdb-go's binding imports os/exec, which imports everything this
// package imports, so this package is always initialized before it. Keep the
// imports of this file to os and path/filepath for that reason.
package libchdb

import (
	"os"
	"path/filepath"
)

// Version is the chDB library release flowtrace is built and tested with.
const Version = "26.5.3"

// EnvVar names the library explicitly.
const EnvVar = "CHDB_LIB_PATH"

const fileName = "libchdb.so"

// Path is where the library was found.
var Path string

func init() {
	path, ok := find()
	if !ok {
		os.Stderr.WriteString(missingMessage())
		os.Exit(1)
	}
	Path = path
	os.Setenv(EnvVar, path)
}

// Candidates lists where the library is looked for, in order: $CHDB_LIB_PATH
// alone when it is set, else next to the executable, in ../lib beside it, and
// in the cache that `make deps` fills.
func Candidates() []string {
	if p := os.Getenv(EnvVar); p != "" {
		return []string{p}
	}
	var paths []string
	if exe, err := os.Executable(); err == nil {
		if resolved, err := filepath.EvalSymlinks(exe); err == nil {
			exe = resolved
		}
		dir := filepath.Dir(exe)
		paths = append(paths, filepath.Join(dir, fileName), filepath.Join(dir, "..", "lib", fileName))
	}
	if cache := cacheDir(); cache != "" {
		paths = append(paths, filepath.Join(cache, "flowtrace", "chdb", Version, fileName))
	}
	return paths
}

func find() (string, bool) {
	candidates := Candidates()
	for _, p := range candidates {
		if info, err := os.Stat(p); err == nil && !info.IsDir() {
			if abs, err := filepath.Abs(p); err == nil {
				return abs, true
			}
			return p, true
		}
	}
	return "", false
}

func cacheDir() string {
	if dir := os.Getenv("XDG_CACHE_HOME"); dir != "" {
		return dir
	}
	if home := os.Getenv("HOME"); home != "" {
		return filepath.Join(home, ".cache")
	}
	return ""
}

func missingMessage() string {
	msg := "flowtrace: the embedded ClickHouse engine needs " + fileName + " (chDB " + Version + "), and it was not found.\n" +
		"Looked at:\n"
	for _, p := range Candidates() {
		msg += "  " + p + "\n"
	}
	msg += "Get it with `make deps` in the flowtrace source tree, or by hand:\n" +
		"  npm pack @chdb/lib-linux-x64-gnu@" + Version + "\n" +
		"  tar -xzf chdb-lib-linux-x64-gnu-" + Version + ".tgz package/" + fileName + "\n" +
		"and put package/" + fileName + " next to the flowtrace binary, or set " + EnvVar + " to its path.\n"
	return msg
}
