//! The terminal side of `top`: draws the latest snapshot and reads keys. The terminal is
//! put back (cooked mode, main screen) however the loop ends, a panic included (ratatui's
//! hook does that). No mouse: it works over ssh.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, TryRecvError};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Row, Table};
use ratatui::{DefaultTerminal, Frame};

use super::snapshot::{Snapshot, ThreadRow};
use crate::output::text::COLUMNS;

/// How the thread table is ordered; `s` moves to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sort {
    Samples,
    /// By the share of one column of `COLUMNS`.
    State(usize),
    Tid,
}

impl Sort {
    fn next(self) -> Sort {
        match self {
            Sort::Samples => Sort::State(0),
            Sort::State(i) if i + 1 < COLUMNS.len() => Sort::State(i + 1),
            Sort::State(_) => Sort::Tid,
            Sort::Tid => Sort::Samples,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Sort::Samples => "samples",
            Sort::State(i) => COLUMNS[i].1,
            Sort::Tid => "tid",
        }
    }

    fn order(self, rows: &mut [ThreadRow]) {
        match self {
            Sort::Samples => rows.sort_by(|a, b| b.samples.cmp(&a.samples).then(a.tid.cmp(&b.tid))),
            Sort::State(i) => {
                rows.sort_by(|a, b| b.shares[i].total_cmp(&a.shares[i]).then(a.tid.cmp(&b.tid)))
            }
            Sort::Tid => rows.sort_by_key(|r| r.tid),
        }
    }
}

/// Why the screen closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// `q`, Esc or Ctrl-C.
    Quit,
    /// Asked to stop from outside (SIGINT, SIGTERM).
    Stopped,
    /// No more snapshots: the target exited.
    TargetGone,
}

/// Show snapshots as they come until a quit key, `stop`, or the end of the snapshots.
pub fn run(snapshots: &Receiver<Snapshot>, stop: &AtomicBool) -> std::io::Result<Closed> {
    let mut terminal = ratatui::try_init()?;
    let closed = show(&mut terminal, snapshots, stop);
    ratatui::restore();
    closed
}

fn show(
    terminal: &mut DefaultTerminal,
    snapshots: &Receiver<Snapshot>,
    stop: &AtomicBool,
) -> std::io::Result<Closed> {
    let mut latest = Snapshot::default();
    let mut sort = Sort::Samples;
    loop {
        loop {
            match snapshots.try_recv() {
                Ok(s) => latest = s,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return Ok(Closed::TargetGone),
            }
        }
        terminal.draw(|f| draw(f, &latest, sort))?;
        if stop.load(Ordering::Relaxed) {
            return Ok(Closed::Stopped);
        }
        if !event::poll(Duration::from_millis(200))? {
            continue;
        }
        let Event::Key(key) = event::read()? else {
            continue;
        };
        if key.kind != KeyEventKind::Press {
            continue;
        }
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc => return Ok(Closed::Quit),
            KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                return Ok(Closed::Quit);
            }
            KeyCode::Char('s') => sort = sort.next(),
            _ => {}
        }
    }
}

fn draw(f: &mut Frame, s: &Snapshot, sort: Sort) {
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let mut head = vec![Line::styled(
        format!(
            "parprof top: pid {} ({}), {:.0} s sampled",
            s.pid, s.command, s.seconds
        ),
        bold,
    )];
    head.extend(s.parallelism.iter().map(|l| Line::raw(l.as_str())));
    head.extend(s.limits.iter().map(|l| Line::styled(l.as_str(), bold)));
    let [header, threads, hottest, locks, keys] = Layout::vertical([
        Constraint::Length(head.len() as u16),
        Constraint::Min(4),
        Constraint::Length(s.hottest.len() as u16 + 2),
        Constraint::Length(s.locks.len().max(1) as u16 + 2),
        Constraint::Length(1),
    ])
    .areas(f.area());
    f.render_widget(Paragraph::new(head), header);
    f.render_widget(thread_table(s, sort), threads);
    f.render_widget(
        Paragraph::new(lines(&s.hottest)).block(Block::bordered().title("functions")),
        hottest,
    );
    let lock_lines = if s.locks.is_empty() {
        vec![Line::raw("no lock contended")]
    } else {
        lines(&s.locks)
    };
    f.render_widget(
        Paragraph::new(lock_lines).block(Block::bordered().title("locks")),
        locks,
    );
    f.render_widget(
        Paragraph::new(format!(
            "q quit   s sort by {} (now {})",
            sort.next().name(),
            sort.name()
        )),
        keys,
    );
}

/// Each string a line of text.
fn lines(v: &[String]) -> Vec<Line<'_>> {
    v.iter().map(|l| Line::raw(l.as_str())).collect()
}

fn thread_table(s: &Snapshot, sort: Sort) -> Table<'static> {
    let mut rows = s.threads.clone();
    sort.order(&mut rows);
    let mut header = vec!["tid".to_string(), "name".into(), "samples".into()];
    header.extend(COLUMNS.iter().map(|(_, name)| format!("{name} %")));
    let body = rows.into_iter().map(|r| {
        let mut cells = vec![r.tid.to_string(), r.name, r.samples.to_string()];
        cells.extend(r.shares.iter().map(|p| format!("{p:.1}")));
        Row::new(cells)
    });
    let mut widths = vec![
        Constraint::Length(8),
        Constraint::Length(18),
        Constraint::Length(8),
    ];
    widths.extend(COLUMNS.iter().map(|_| Constraint::Length(10)));
    Table::new(body, widths)
        .header(Row::new(header).style(Style::default().add_modifier(Modifier::BOLD)))
        .block(Block::bordered().title(format!("threads (by {})", sort.name())))
}
