//! The coordinator's side of worker processes: start N copies of this binary in worker
//! mode, talk to each over its stdin/stdout, and stop them (they are killed if the
//! coordinator goes away first).

use std::process::Stdio;

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command as Process};

use crate::proto::{Command, Reply};

pub struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Worker {
    pub fn spawn() -> anyhow::Result<Worker> {
        let exe = std::env::current_exe().context("finding pgchat-bench's own binary")?;
        let mut child = Process::new(exe)
            .arg("worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting a worker process")?;
        let stdin = child.stdin.take().context("worker stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("worker stdout")?).lines();
        Ok(Worker {
            child,
            stdin,
            stdout,
        })
    }

    pub async fn send(&mut self, command: &Command) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(command)?;
        line.push(b'\n');
        self.stdin.write_all(&line).await?;
        self.stdin.flush().await?;
        Ok(())
    }

    pub async fn recv(&mut self) -> anyhow::Result<Reply> {
        let line = self
            .stdout
            .next_line()
            .await?
            .context("a worker exited without replying (see its stderr)")?;
        let reply: Reply = serde_json::from_str(&line).context("parsing a worker's reply")?;
        if let Reply::Failed { error } = reply {
            bail!("a worker failed: {error}");
        }
        Ok(reply)
    }

    /// Waits for the process to end after its last reply.
    pub async fn finish(mut self) {
        drop(self.stdin);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), self.child.wait()).await;
    }
}

/// Sends each worker its command, then collects every reply (the workers work on
/// them at the same time).
pub async fn all(workers: &mut [Worker], commands: Vec<Command>) -> anyhow::Result<Vec<Reply>> {
    for (w, command) in workers.iter_mut().zip(&commands) {
        w.send(command).await?;
    }
    let mut replies = Vec::with_capacity(workers.len());
    for w in workers.iter_mut() {
        replies.push(w.recv().await?);
    }
    Ok(replies)
}
