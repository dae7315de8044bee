//! The in-memory datagram "socket" under one `Ssl`: a read takes the datagram being processed,
//! writes collect the records to send. The caller owns the real UDP socket, so one event loop
//! (the server's session table, the load generator's devices) drives any number of sessions
//! without a thread or a socket per `Ssl`.

use std::io::{ErrorKind, Read, Write};

#[derive(Default, Debug)]
pub struct DatagramPipe {
    inbox: Option<Vec<u8>>,
    outbox: Vec<Vec<u8>>,
}

impl DatagramPipe {
    /// The datagram the next read returns (one at a time: DTLS reads whole records).
    pub fn put(&mut self, datagram: &[u8]) {
        self.inbox = Some(datagram.to_vec());
    }

    /// Forgets a datagram OpenSSL did not read.
    pub fn clear(&mut self) {
        self.inbox = None;
    }

    /// The records written since the last call, to send in order.
    pub fn take_outbox(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.outbox)
    }
}

impl Read for DatagramPipe {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.inbox.take() {
            Some(datagram) => {
                let n = datagram.len().min(buf.len());
                buf[..n].copy_from_slice(&datagram[..n]);
                Ok(n)
            }
            None => Err(ErrorKind::WouldBlock.into()),
        }
    }
}

impl Write for DatagramPipe {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.outbox.push(buf.to_vec());
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
