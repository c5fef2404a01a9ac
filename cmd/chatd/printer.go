package main

import (
	"fmt"
	"io"
	"os"
	"time"
)

// printer shows progress: on a terminal one line rewritten in place, in a
// log or pipe a line every five seconds.
type printer struct {
	w    io.Writer
	tty  bool
	last time.Time
	open bool
}

func newPrinter(w io.Writer) *printer {
	p := &printer{w: w}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
		}
	}
	return p
}

// progress shows a line that the next one replaces.
func (p *printer) progress(s string) {
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", s)
		p.open = true
		return
	}
	if time.Since(p.last) >= 5*time.Second {
		fmt.Fprintln(p.w, s)
		p.last = time.Now()
	}
}

// done ends the progress line and prints s, if any, on its own line.
func (p *printer) done(s string) {
	if p.open {
		fmt.Fprintln(p.w)
		p.open = false
	}
	if s != "" {
		fmt.Fprintln(p.w, s)
	}
}
