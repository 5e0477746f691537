package query

import (
	"errors"
	"fmt"
)

// What one answer may cost. The speed cells and batch rows it reads are
// counted as they are read (a read stops as soon as they are too many),
// and the rows it computes once rolled up, before order and limit: the
// memory an answer holds grows with both, and the Redis time of its read
// with the cells. Windows answered before and kept in the query cache
// (final windows, and open ones at the same speed position) are neither
// read nor computed again, and cost nothing.
const (
	limitCells = "http.query_max_cells"
	limitRows  = "http.query_max_rows"
)

// TooLargeError is the error of a query beyond its budget: it names the
// limit and how to narrow the query (serving answers it 422).
type TooLargeError struct {
	View  string
	Limit string // the configuration key: http.query_max_cells or http.query_max_rows
	Max   int64
}

func (e *TooLargeError) Error() string {
	if e.Limit == limitCells {
		return fmt.Sprintf("view %s: the answer would read more than %d speed cells and batch rows (%s): "+
			"ask for a shorter range (from, to): every window in it is read (group_by, where and step do not make it read less)",
			e.View, e.Max, e.Limit)
	}
	return fmt.Sprintf("view %s: the answer would have more than %d rows (%s): "+
		"keep fewer dimensions (group_by=a, or group_by= for none), some groups only (where=dim:value), "+
		"roll windows up (a larger step, or step=all), or ask for a shorter range (from, to)",
		e.View, e.Max, e.Limit)
}

// isTooLarge reports whether err says a query is beyond its budget.
func isTooLarge(err error) (*TooLargeError, bool) {
	var te *TooLargeError
	ok := errors.As(err, &te)
	return te, ok
}

// budget is what one answer may still read and produce (0: no bound).
type budget struct {
	view              string
	maxCells, maxRows int64
	cells, rows       int64
}

func (e *Engine) newBudget(view string) *budget {
	return &budget{view: view, maxCells: e.maxCells, maxRows: e.maxRows}
}

// addCells counts n cells read.
func (b *budget) addCells(n int) error {
	b.cells += int64(n)
	if b.maxCells > 0 && b.cells > b.maxCells {
		return &TooLargeError{View: b.view, Limit: limitCells, Max: b.maxCells}
	}
	return nil
}

// addRows counts n rows of the answer.
func (b *budget) addRows(n int) error {
	b.rows += int64(n)
	if b.maxRows > 0 && b.rows > b.maxRows {
		return &TooLargeError{View: b.view, Limit: limitRows, Max: b.maxRows}
	}
	return nil
}

// tooManyCells is the budget's error for a read that found too many cells.
func (b *budget) tooManyCells() error {
	return &TooLargeError{View: b.view, Limit: limitCells, Max: b.maxCells}
}

// cellsCapped stops a read of speed cells that found more than any answer
// may read (http.query_max_cells) from its start on; inRange: more than
// that of windows before upTo alone.
type cellsCapped struct {
	upTo    int64
	inRange bool
}

func (e *cellsCapped) Error() string { return "more speed cells than one answer may read" }
