"""The advert encoder against BlueZ's rules, and the frame limit at common MTUs."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ble_bridge.transport import LinkInfo, LinkRole, frame_limit
from gatt import advert as ad
from gatt.profile import ADV_COMPANY_ID, GattProfile, id_before, same_peer

SVC = GattProfile().service_uuid
PEER = bytes(range(1, 9))


def test_the_node_advert_fits_a_legacy_advert_with_flags() -> None:
    enc = ad.encode(GattProfile().advertisement(PEER))
    # flags 3 + 128-bit UUID list 18 + manufacturer data 2+2+6 = 31
    assert enc.size == 31
    assert (ad.AD_FLAGS, bytes([ad.FLAG_LE_GENERAL | ad.FLAG_NO_BREDR])) in ad.parse(enc.on_air)
    heard = ad.decode(enc.on_air, enc.scan_rsp)
    assert heard.uuids == [SVC]
    assert heard.manufacturer_data == {ADV_COMPANY_ID: PEER[:6]}
    assert heard.service_data == {}  # 5.66: no scan-response properties
    assert enc.scan_rsp == b""


def test_the_node_advert_fits_when_the_kernel_adds_the_flags() -> None:
    props = GattProfile().advertisement(PEER)
    del props["Discoverable"]
    enc = ad.encode(props, ad.BluezRules(adapter_discoverable=True))
    assert enc.kernel_flags and enc.size == 31


def test_the_47_byte_advert_of_the_old_node_is_refused_as_bluez_refuses_it() -> None:
    old = {
        "Type": "peripheral",
        "ServiceUUIDs": [SVC],
        "ServiceData": {SVC: PEER},
        "Discoverable": True,
    }
    with pytest.raises(ad.AdvertError, match="Advertising data too long") as e:
        ad.encode(old)
    assert e.value.size == 47


def test_scan_response_only_where_bluez_offers_it() -> None:
    props = GattProfile().advertisement(PEER)
    for rules in (ad.BluezRules((5, 66), True), ad.BluezRules((5, 82), False)):
        assert ad.encode(props, rules).scan_rsp == b""
    enc = ad.encode(props, ad.BluezRules((5, 82), experimental=True))
    assert len(enc.scan_rsp) == 2 + 16 + 8
    assert ad.decode(enc.on_air, enc.scan_rsp).service_data == {SVC: PEER}
    assert GattProfile().peer_id_from({SVC: PEER}, {ADV_COMPANY_ID: PEER[:6]}) == PEER
    assert GattProfile().peer_id_from({}, {ADV_COMPANY_ID: PEER[:6]}) == PEER[:6]
    assert GattProfile().peer_id_from({}, {ADV_COMPANY_ID: b"\x01"}) is None


@pytest.mark.parametrize(
    ("props", "size"),
    [
        ({"ServiceUUIDs": ["180d"]}, 4),  # 16-bit list: 2 + 2
        ({"ServiceUUIDs": ["180d", "180f"]}, 6),
        ({"ServiceUUIDs": ["0000180d"]}, 6),  # 32-bit: 2 + 4
        ({"ServiceUUIDs": ["0000180d-0000-1000-8000-00805f9b34fb"]}, 18),  # full stays 128
        ({"ServiceUUIDs": ["180d", SVC]}, 4 + 18),  # one list per size
        ({"SolicitUUIDs": [SVC]}, 18),
        ({"ManufacturerData": {0x004C: b"\x01\x02"}}, 6),  # 2 + 2 + data
        ({"ServiceData": {"180d": b"\x01"}}, 5),  # 2 + 2 + data
        ({"ServiceData": {SVC: b"\x01"}}, 19),  # 2 + 16 + data
        ({"Appearance": 0x0340}, 4),
        ({"Data": {0x26: b"\x01\x02\x03"}}, 5),
        ({"Discoverable": True}, 3),
        ({"Discoverable": False}, 0),
        ({"LocalName": "a-name"}, 0),  # legacy connectable: the name goes to the scan response
    ],
)
def test_each_ad_type_costs_what_bluez_counts(props: dict[str, object], size: int) -> None:
    enc = ad.encode({"Type": "peripheral", **props})
    assert enc.size == size
    assert sum(2 + len(v) for _, v in ad.parse(enc.on_air)) == size  # parses back whole


def test_room_shrinks_for_kernel_added_fields_and_names_are_shortened() -> None:
    uuids = {"ServiceUUIDs": [SVC], "ManufacturerData": {1: bytes(9)}}  # 18 + 13 = 31
    ad.encode(uuids)
    for extra in ({"Includes": ["tx-power"]}, {"Includes": ["appearance"]}):
        with pytest.raises(ad.AdvertError):
            ad.encode({**uuids, **extra})
    with pytest.raises(ad.AdvertError):
        ad.encode(uuids, ad.BluezRules(adapter_discoverable=True))
    enc = ad.encode({"LocalName": "x" * 40})
    assert ad.decode(enc.scan_rsp).name == "x" * 29
    assert ad.parse(enc.scan_rsp)[0][0] == ad.AD_NAME_SHORT
    with pytest.raises(ad.AdvertError, match="Broadcast cannot set flags"):
        ad.encode({"Type": "broadcast", "Discoverable": True})


_uuid16 = st.integers(0, 0xFFFF).map(lambda v: f"{v:04x}")
_uuid128 = st.uuids().map(str)


@given(
    uuids=st.lists(st.one_of(_uuid16, _uuid128), max_size=3, unique=True),
    mdata=st.dictionaries(st.integers(0, 0xFFFF), st.binary(max_size=8), max_size=2),
    sdata=st.dictionaries(_uuid16, st.binary(max_size=6), max_size=2),
    discoverable=st.booleans(),
)
def test_encode_then_decode_gives_back_what_fits(
    uuids: list[str],
    mdata: dict[int, bytes],
    sdata: dict[str, bytes],
    discoverable: bool,
) -> None:
    props = {
        "ServiceUUIDs": uuids,
        "ManufacturerData": mdata,
        "ServiceData": sdata,
        "Discoverable": discoverable,
    }
    try:
        enc = ad.encode(props)
    except ad.AdvertError as e:
        assert e.size > 31
        return
    assert enc.size <= 31
    heard = ad.decode(enc.on_air)
    assert heard.uuids == [
        ad.uuid_text(ad.uuid_bytes(u)) for u in sorted(uuids, key=lambda u: len(u))
    ]
    assert heard.manufacturer_data == mdata
    assert heard.service_data == {ad.uuid_text(ad.uuid_bytes(k)): v for k, v in sdata.items()}


@given(st.binary(max_size=64))
def test_decoding_garbage_raises_only_its_own_error(data: bytes) -> None:
    with contextlib.suppress(ad.AdDecodeError):
        ad.decode(data)


@pytest.mark.parametrize(("mtu", "limit"), [(23, 20), (185, 182), (247, 244), (517, 512)])
def test_frame_limit_is_mtu_minus_3_capped_at_512(mtu: int, limit: int) -> None:
    assert frame_limit(mtu) == limit
    assert LinkInfo(1, "a", mtu, LinkRole.CENTRAL).max_frame == limit
    assert LinkInfo(1, "a", mtu, LinkRole.PERIPHERAL).max_frame == limit


def test_shortened_ids_compare_on_their_common_prefix() -> None:
    assert same_peer(PEER, PEER[:6]) and not same_peer(PEER, None)
    assert not same_peer(PEER, bytes(8))
    assert id_before(PEER[:6], bytes([9]) * 8) and not id_before(PEER, PEER[:6])
