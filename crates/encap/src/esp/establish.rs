//! The receive side of the key schedule: which SA an SPI never seen before belongs to.
//!
//! Nothing announces SAs: a receiver meets a new one in its first packet. The SPI's top bits name
//! the key epoch; the SA's key also depends on the sending VTEP, which behind a NAT is not the
//! packet's source address, so the caller offers candidates in the order most likely to succeed
//! (the peer whose endpoint the packet came from first, then the rest of the network's peers).
//! Each candidate costs one HKDF and one AES-GCM verification of a copy of the packet; nothing is
//! kept for a packet none of them verifies, so forged SPIs cost time but never state.

use std::net::IpAddr;

use crate::esp::keys::{KeyEpoch, NetworkKey, SaId, Spi};
use crate::esp::replay::ReplayWindow;
use crate::esp::sa::{OpenKey, OpenSa};
use crate::esp::wire::EspPacket;
use crate::esp::EspError;

/// Finds the inbound SA `packet` was sealed under: one of `keys` (the epochs in the network's key
/// ring) whose tag the SPI carries, one of `sources`, and `local` (this VTEP's configured address)
/// as destination. `scratch` (at least as long as the packet) holds the trial decryptions, so the
/// packet itself is left as it was: open it with the returned SA as usual, which also starts the
/// SA's replay window. `UnknownSpi` if no key of the ring has the SPI's epoch tag, `BadIcv` if no
/// candidate verifies.
pub fn establish<'k>(
    packet: &[u8],
    keys: impl IntoIterator<Item = (KeyEpoch, &'k NetworkKey)>,
    sources: impl IntoIterator<Item = IpAddr> + Clone,
    local: IpAddr,
    scratch: &mut [u8],
) -> Result<OpenSa, EspError> {
    let p = EspPacket::new_checked(packet)?;
    let spi = p.spi();
    let Some(spi_id) = Spi::new(spi) else {
        return Err(EspError::ReservedSpi { spi });
    };
    let Some(scratch) = scratch.get_mut(..packet.len()) else {
        return Err(EspError::NoTailroom {
            needed: packet.len(),
            available: scratch.len(),
        });
    };
    let mut tried_any = false;
    for (epoch, network) in keys {
        if epoch.tag() != spi_id.epoch_tag() {
            continue;
        }
        tried_any = true;
        for src in sources.clone() {
            let id = SaId {
                epoch,
                spi: spi_id,
                src,
                dst: local,
            };
            let key = OpenKey::new(network, id);
            let Ok(seq) = key.sequence_of(packet, &ReplayWindow::new()) else {
                continue;
            };
            scratch.copy_from_slice(packet);
            if key.decrypt_in_place(seq, scratch).is_ok() {
                return Ok(OpenSa::from_key(key));
            }
        }
    }
    if tried_any {
        Err(EspError::BadIcv)
    } else {
        Err(EspError::UnknownSpi { spi })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::esp::sa::SealSa;
    use crate::esp::wire::MAX_TAILROOM;
    use std::net::Ipv4Addr;

    fn addr(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 7, 0, last))
    }

    #[test]
    fn finds_the_sender_and_epoch_and_refuses_strangers() {
        let old = NetworkKey::from_bytes([1; 32]);
        let new = NetworkKey::from_bytes([2; 32]);
        let id = SaId {
            epoch: KeyEpoch(9),
            spi: Spi::for_epoch(KeyEpoch(9), 0xABCDE),
            src: addr(3),
            dst: addr(1),
        };
        let mut tx = SealSa::new(&new, id, 77);
        let mut buf = vec![0u8; 16 + 30 + MAX_TAILROOM];
        let sealed = tx.seal_in_place(&mut buf, 16..46).unwrap();
        let mut packet = buf[sealed.packet].to_vec();
        let mut scratch = vec![0u8; 2048];
        let ring = [(KeyEpoch(8), &old), (KeyEpoch(9), &new)];
        let sources = [addr(2), addr(3), addr(4)];

        let mut sa = establish(&packet, ring, sources, addr(1), &mut scratch).unwrap();
        assert_eq!(sa.key().id(), &id);
        let before = packet.clone();
        assert_eq!(sa.open_in_place(&mut packet).unwrap().seq, 77);
        assert_ne!(packet, before, "opened in place");

        // Same packet, this receiver is not its destination; or the sender is not a candidate.
        assert_eq!(
            establish(&before, ring, sources, addr(5), &mut scratch).err(),
            Some(EspError::BadIcv)
        );
        assert_eq!(
            establish(&before, ring, [addr(2)], addr(1), &mut scratch).err(),
            Some(EspError::BadIcv)
        );
        // An epoch tag no key of the ring has.
        let ring_without = [(KeyEpoch(8), &old)];
        assert_eq!(
            establish(&before, ring_without, sources, addr(1), &mut scratch).err(),
            Some(EspError::UnknownSpi { spi: id.spi.get() })
        );
        let mut small = [0u8; 8];
        assert!(matches!(
            establish(&before, ring, sources, addr(1), &mut small),
            Err(EspError::NoTailroom { .. })
        ));
    }
}
