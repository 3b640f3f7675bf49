package redistapreceiver

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// xreadFrame is a reply to XREAD captured from a real Redis (RESP2), kept
// in testdata; its entries' bodies are synthetic.
const xreadFrame = "xread.resp"

// captureXRead sends XREAD for stream to the Redis at addr over a plain
// connection and saves the reply's bytes as they came.
func captureXRead(t *testing.T, addr, stream string) {
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer conn.Close()
	args := []string{"XREAD", "COUNT", "1000", "STREAMS", stream, "0-0"}
	_, err = conn.Write(encodeCommand(args))
	require.NoError(t, err)
	var frame []byte
	buf := make([]byte, 64<<10)
	for {
		require.NoError(t, conn.SetReadDeadline(time.Now().Add(500*time.Millisecond)))
		n, err := conn.Read(buf)
		frame = append(frame, buf[:n]...)
		var netErr net.Error
		if errors.As(err, &netErr) && netErr.Timeout() {
			break
		}
		require.NoError(t, err)
	}
	require.NotEmpty(t, frame)
	require.NoError(t, os.WriteFile(filepath.Join("testdata", xreadFrame), frame, 0o644))
}

func encodeCommand(args []string) []byte {
	b := []byte("*" + strconv.Itoa(len(args)) + "\r\n")
	for _, a := range args {
		b = append(b, "$"+strconv.Itoa(len(a))+"\r\n"+a+"\r\n"...)
	}
	return b
}

// replayServer answers every XREAD with the captured frame and every other
// command with an error, as a server without them would: go-redis then
// speaks RESP2, as the frame does.
func replayServer(tb testing.TB) string {
	frame, err := os.ReadFile(filepath.Join("testdata", xreadFrame))
	require.NoError(tb, err)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(tb, err)
	done := make(chan struct{})
	tb.Cleanup(func() {
		_ = l.Close()
		<-done
	})
	go func() {
		defer close(done)
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				_ = c.Close()
			}
		}()
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			conns = append(conns, conn)
			go serveReplay(conn, frame)
		}
	}()
	return l.Addr().String()
}

func serveReplay(conn net.Conn, frame []byte) {
	r := bufio.NewReader(conn)
	w := bufio.NewWriter(conn)
	for {
		args, err := readCommand(r)
		if err != nil {
			return
		}
		if len(args) > 0 && strings.EqualFold(args[0], "XREAD") {
			_, _ = w.Write(frame)
		} else {
			_, _ = w.WriteString("-ERR unknown command\r\n")
		}
		if w.Flush() != nil {
			return
		}
	}
}

// readCommand reads one command: an array of bulk strings.
func readCommand(r *bufio.Reader) ([]string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	if len(line) < 3 || line[0] != '*' {
		return nil, errors.New("not a command")
	}
	n, err := strconv.Atoi(strings.TrimSpace(line[1:]))
	if err != nil {
		return nil, err
	}
	args := make([]string, 0, n)
	for range n {
		line, err := r.ReadString('\n')
		if err != nil {
			return nil, err
		}
		size, err := strconv.Atoi(strings.TrimSpace(line[1:]))
		if err != nil || size < 0 {
			return nil, errors.New("not a bulk string")
		}
		b := make([]byte, size+2)
		if _, err := io.ReadFull(r, b); err != nil {
			return nil, err
		}
		args = append(args, string(b[:size]))
	}
	return args, nil
}
