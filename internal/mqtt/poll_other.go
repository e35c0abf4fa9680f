//go:build !linux

package mqtt

import (
	"errors"
	"net"
	"syscall"
)

// Without epoll every connection keeps its reader goroutine.

type poller struct{ epfd int }

type fdConn struct{ netConn }

func newPollers(*Server) ([]*poller, error) { return nil, nil }

func (s *Server) pollable(net.Conn) (syscall.RawConn, *poller) { return nil, nil }

func (c *conn) watch() bool                       { return false }
func (c *conn) arm() error                        { return errors.ErrUnsupported }
func (c *conn) unwatch()                          {}
func (c *conn) readSome([]byte) (int, error)      { return 0, errors.ErrUnsupported }
func (c *conn) shutdownNet()                      { _ = c.nc.Close() }
func (p *poller) wake()                           {}
func (s *Server) polledConns(out []*conn) []*conn { return out }
func (p *poller) schedule(*conn, int64)           {}
