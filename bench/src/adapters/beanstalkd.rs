//! beanstalkd's text protocol over one TCP connection per worker. Single style: one
//! command and its reply at a time. Best style: the protocol's own batching, pipelining:
//! up to 16 `put`s, `reserve`s or `delete`s written together, replies read in order.

use anyhow::{Context, Result, bail};
use async_trait::async_trait;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::{ClientStyle, Consumer, Delivery, Producer, Receipt, System};

/// Seconds a reserved job may stay unacknowledged before beanstalkd releases it again.
const TIME_TO_RUN: u32 = 120;

pub struct Beanstalkd {
    address: String,
    tube: String,
}

impl Beanstalkd {
    pub fn new(address: &str, tube: &str) -> Self {
        Self {
            address: address.to_string(),
            tube: tube.to_string(),
        }
    }

    async fn open(&self) -> Result<Connection> {
        let stream = TcpStream::connect(&self.address)
            .await
            .with_context(|| format!("connect to beanstalkd at {}", self.address))?;
        stream.set_nodelay(true)?;
        let (read, write) = stream.into_split();
        Ok(Connection {
            reader: BufReader::new(read),
            writer: BufWriter::new(write),
            line: String::new(),
        })
    }
}

struct Connection {
    reader: BufReader<OwnedReadHalf>,
    writer: BufWriter<OwnedWriteHalf>,
    line: String,
}

/// A reply line of beanstalkd, parsed.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    Inserted(u64),
    Reserved { id: u64, bytes: usize },
    TimedOut,
    Deleted,
    Other(String),
}

pub fn parse_reply(line: &str) -> Result<Reply> {
    let words: Vec<&str> = line.trim_end().split(' ').collect();
    let number = |i: usize| -> Result<u64> {
        words
            .get(i)
            .context("short reply")?
            .parse()
            .with_context(|| format!("number in reply {line:?}"))
    };
    Ok(match words.first().copied() {
        Some("INSERTED") => Reply::Inserted(number(1)?),
        Some("RESERVED") => Reply::Reserved {
            id: number(1)?,
            bytes: usize::try_from(number(2)?)?,
        },
        Some("TIMED_OUT") => Reply::TimedOut,
        Some("DELETED") => Reply::Deleted,
        _ => Reply::Other(line.trim_end().to_string()),
    })
}

pub fn put_command(body: &[u8]) -> Vec<u8> {
    let mut command = format!("put 1024 0 {TIME_TO_RUN} {}\r\n", body.len()).into_bytes();
    command.extend_from_slice(body);
    command.extend_from_slice(b"\r\n");
    command
}

impl Connection {
    async fn write(&mut self, command: &[u8]) -> Result<()> {
        self.writer
            .write_all(command)
            .await
            .context("write to beanstalkd")
    }

    async fn reply(&mut self) -> Result<Reply> {
        self.writer.flush().await.context("write to beanstalkd")?;
        self.line.clear();
        let n = self
            .reader
            .read_line(&mut self.line)
            .await
            .context("read from beanstalkd")?;
        if n == 0 {
            bail!("beanstalkd closed the connection");
        }
        parse_reply(&self.line)
    }

    async fn expect(&mut self, command: &str, prefix: &str) -> Result<()> {
        self.write(command.as_bytes()).await?;
        match self.reply().await? {
            Reply::Other(line) if line.starts_with(prefix) => Ok(()),
            other => bail!("beanstalkd answered {other:?} to {}", command.trim_end()),
        }
    }

    /// Reads the body that follows a RESERVED line.
    async fn body(&mut self, bytes: usize) -> Result<Vec<u8>> {
        let mut body = vec![0; bytes + 2];
        self.reader
            .read_exact(&mut body)
            .await
            .context("read job body")?;
        body.truncate(bytes);
        Ok(body)
    }
}

struct Client {
    connection: Connection,
}

#[async_trait]
impl System for Beanstalkd {
    async fn prepare(&self) -> Result<()> {
        // Tubes come into being when used; each run names its own.
        let mut connection = self.open().await?;
        connection
            .expect(&format!("use {}\r\n", self.tube), "USING")
            .await
    }

    async fn producer(&self, _style: ClientStyle) -> Result<Box<dyn Producer>> {
        let mut connection = self.open().await?;
        connection
            .expect(&format!("use {}\r\n", self.tube), "USING")
            .await?;
        Ok(Box::new(Client { connection }))
    }

    async fn consumer(&self, _style: ClientStyle, _index: usize) -> Result<Box<dyn Consumer>> {
        let mut connection = self.open().await?;
        connection
            .expect(&format!("watch {}\r\n", self.tube), "WATCHING")
            .await?;
        connection.expect("ignore default\r\n", "WATCHING").await?;
        Ok(Box::new(Client { connection }))
    }
}

#[async_trait]
impl Producer for Client {
    async fn send(&mut self, bodies: &[Vec<u8>]) -> Result<()> {
        for body in bodies {
            self.connection.write(&put_command(body)).await?;
        }
        for _ in bodies {
            match self.connection.reply().await? {
                Reply::Inserted(_) => {}
                other => bail!("beanstalkd answered {other:?} to put"),
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Consumer for Client {
    async fn receive(&mut self, max: usize) -> Result<Vec<Delivery>> {
        // Wait up to a second for the first job, then take what is ready without waiting.
        self.connection.write(b"reserve-with-timeout 1\r\n").await?;
        for _ in 1..max {
            self.connection.write(b"reserve-with-timeout 0\r\n").await?;
        }
        let mut deliveries = Vec::with_capacity(max);
        for _ in 0..max {
            match self.connection.reply().await? {
                Reply::Reserved { id, bytes } => deliveries.push(Delivery {
                    body: self.connection.body(bytes).await?,
                    redelivered: false,
                    receipt: Receipt::Tag(id),
                }),
                Reply::TimedOut => {}
                other => bail!("beanstalkd answered {other:?} to reserve"),
            }
        }
        Ok(deliveries)
    }

    async fn ack(&mut self, deliveries: &[Delivery]) -> Result<()> {
        for delivery in deliveries {
            let Receipt::Tag(id) = delivery.receipt else {
                bail!("beanstalkd acknowledges by job id");
            };
            self.connection
                .write(format!("delete {id}\r\n").as_bytes())
                .await?;
        }
        for _ in deliveries {
            match self.connection.reply().await? {
                Reply::Deleted => {}
                other => bail!("beanstalkd answered {other:?} to delete"),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse_into_their_kind() {
        assert_eq!(parse_reply("INSERTED 17\r\n").unwrap(), Reply::Inserted(17));
        assert_eq!(
            parse_reply("RESERVED 5 256\r\n").unwrap(),
            Reply::Reserved { id: 5, bytes: 256 }
        );
        assert_eq!(parse_reply("TIMED_OUT\r\n").unwrap(), Reply::TimedOut);
        assert_eq!(parse_reply("DELETED\r\n").unwrap(), Reply::Deleted);
        assert_eq!(
            parse_reply("JOB_TOO_BIG\r\n").unwrap(),
            Reply::Other("JOB_TOO_BIG".into())
        );
        assert!(parse_reply("INSERTED x\r\n").is_err());
    }

    #[test]
    fn put_frames_the_body_with_its_length() {
        assert_eq!(put_command(b"abc"), b"put 1024 0 120 3\r\nabc\r\n".to_vec());
    }
}
