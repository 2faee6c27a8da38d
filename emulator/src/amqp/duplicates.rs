//! A second link with the name of one still attached on the same session and in the same
//! direction (AMQP 1.0 §2.6.1: a name identifies one link per direction). fe2o3 fails such an
//! attach with `DuplicatedLinkName` and sends nothing at all, which leaves the peer waiting
//! for an answer forever. So the attach is shown to fe2o3 again under a name of its own
//! (the peer's name, [`marker`], a number), accepted, and detached at once with
//! `amqp:invalid-field`; on the way out [`super::frame_guard::restore_link_name`] cuts the
//! name back at the marker, so the peer sees its own name in the answer. The link already
//! attached under the name is not touched.

use std::sync::OnceLock;

use fe2o3_amqp::acceptor::error::AcceptorAttachError;
use fe2o3_amqp::acceptor::{LinkAcceptor, LinkEndpoint, ListenerSessionHandle};
use fe2o3_amqp::link::{ReceiverAttachError, SenderAttachError};
use fe2o3_amqp_types::definitions::{AmqpError, Error};
use fe2o3_amqp_types::messaging::{Source, Target};
use fe2o3_amqp_types::performatives::Attach;
use ring::rand::{SecureRandom, SystemRandom};

/// How long to wait, one after the other, for a name to come free before the attach counts
/// as a duplicate: fe2o3 frees a link's name only once its answer to the peer's `detach` has
/// gone out, so a peer that detaches and at once attaches under the same name (legal) can
/// find the name still taken for a moment.
const NAME_RELEASE_WAITS: [std::time::Duration; 3] = [
    std::time::Duration::from_millis(10),
    std::time::Duration::from_millis(40),
    std::time::Duration::from_millis(150),
];

/// An attached link, and whether it is a duplicate to detach at once.
pub struct Accepted {
    /// The link as fe2o3 attached it.
    pub link: LinkEndpoint,
    /// The name the peer gave, when the link is a duplicate to refuse.
    pub duplicate_of: Option<String>,
}

/// Where the emulator's own part of a renamed link's name begins: `\0dup:` and random hex,
/// drawn once per process, so that no name a peer chooses can contain it by chance.
pub fn marker() -> &'static str {
    static MARKER: OnceLock<String> = OnceLock::new();
    MARKER.get_or_init(|| {
        let mut bytes = [0u8; 8];
        // The OS generator does not fail on any platform the emulator runs on; if it did,
        // the marker would still be one no SDK puts in a link name.
        let _ = SystemRandom::new().fill(&mut bytes);
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        format!("\u{0}dup:{hex}:")
    })
}

/// Accepts `attach`. A name still taken after [`NAME_RELEASE_WAITS`] is accepted under a new
/// name (`renamed` counts them, so that each gets its own) and reported in
/// [`Accepted::duplicate_of`].
pub async fn accept<FS, FT>(
    acceptor: &LinkAcceptor<FS, FT>,
    attach: Attach,
    session: &mut ListenerSessionHandle,
    renamed: &mut u64,
) -> Result<Accepted, AcceptorAttachError>
where
    FS: Fn(Source) -> Option<Source>,
    FT: Fn(Target) -> Option<Target>,
{
    let mut waits = NAME_RELEASE_WAITS.iter();
    loop {
        let retry = attach.clone();
        match acceptor.accept_incoming_attach(retry, session).await {
            Ok(link) => {
                return Ok(Accepted {
                    link,
                    duplicate_of: None,
                });
            }
            Err(e) if is_duplicate(&e) => match waits.next() {
                Some(wait) => tokio::time::sleep(*wait).await,
                None => break,
            },
            Err(e) => return Err(e),
        }
    }
    let mut attach = attach;
    let name = attach.name.clone();
    *renamed += 1;
    attach.name = format!("{name}{}{renamed}", marker());
    let link = acceptor.accept_incoming_attach(attach, session).await?;
    Ok(Accepted {
        link,
        duplicate_of: Some(name),
    })
}

fn is_duplicate(e: &AcceptorAttachError) -> bool {
    matches!(
        e,
        AcceptorAttachError::LocalSender(SenderAttachError::DuplicatedLinkName)
            | AcceptorAttachError::LocalReceiver(ReceiverAttachError::DuplicatedLinkName)
    )
}

/// The error a duplicate is detached with. `name` may carry the receiver suffix of
/// [`super::frame_guard`]; the text shows the name as the peer gave it.
pub fn error(name: &str) -> Error {
    let name = name
        .strip_suffix(super::frame_guard::RECEIVER_SUFFIX)
        .unwrap_or(name);
    Error::new(
        AmqpError::InvalidField,
        format!("a link named '{name}' in this direction is already attached on this session"),
        None,
    )
}

/// The peer's name of a link the emulator renamed: everything before [`marker`]; `None` for
/// a name that was not renamed.
pub fn original_name(name: &str) -> Option<&str> {
    name.find(marker()).map(|at| &name[..at])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renamed_names_cut_back_to_the_peers_own() {
        let renamed = format!("x\u{0}r{}7", marker());
        assert_eq!(original_name(&renamed), Some("x\u{0}r"));
        assert_eq!(original_name("x"), None);
        assert_eq!(
            original_name("x\u{0}dup:"),
            None,
            "only the process's own marker"
        );
        assert!(marker().len() > 16);
    }
}
