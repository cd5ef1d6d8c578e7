-- Wireshark dissector for ble-bridge loopback-air captures and BitChat mesh frames.
--
-- Captures written by `ble-bridge simulate --capture FILE.pcap` use link-layer type 147
-- (USER0). Each record: a 12-byte air header, then the mesh frame as sent on the link.
--   air header: version(1) event(1) src_node(2) dst_node(2) link_id(4) role(1) reserved(1)
--   frame: version(1) type(1) ttl(1) timestamp_ms(8) flags(1) payload_len(2 v1 | 4 v2)
--          sender(8) [recipient(8) if 0x01] [route count(1)+8*n if v2 and 0x08]
--          [original_size(2|4) if 0x04] payload [signature(64) if 0x02]
--   fragment payload (type 0x20): fragment_id(8) index(2) total(2) original_type(1) chunk
--
-- Use: wireshark -X lua_script:tools/wireshark/ble_bridge.lua capture.pcap
--  or copy this file to ~/.local/lib/wireshark/plugins/

local air = Proto("blebridge_air", "ble-bridge loopback air")
local mesh = Proto("bitchat", "BitChat mesh frame")

local EVENTS = { [0] = "delivered", [1] = "lost (link dropped)", [2] = "lost (fault)", [3] = "injected" }
local ROLES = { [0] = "central -> peripheral (write)", [1] = "peripheral -> central (notify)" }
local TYPES = {
  [0x01] = "announce", [0x02] = "message", [0x03] = "leave",
  [0x10] = "noise handshake", [0x11] = "noise encrypted", [0x1C] = "consensus",
  [0x20] = "fragment", [0x21] = "request sync", [0x22] = "file transfer",
}

local af = {
  version = ProtoField.uint8("blebridge_air.version", "Air header version"),
  event = ProtoField.uint8("blebridge_air.event", "Event", base.DEC, EVENTS),
  src = ProtoField.uint16("blebridge_air.src", "Source node"),
  dst = ProtoField.uint16("blebridge_air.dst", "Destination node"),
  link = ProtoField.uint32("blebridge_air.link", "Link id"),
  role = ProtoField.uint8("blebridge_air.role", "Direction", base.DEC, ROLES),
}
air.fields = { af.version, af.event, af.src, af.dst, af.link, af.role }

local mf = {
  version = ProtoField.uint8("bitchat.version", "Version"),
  type = ProtoField.uint8("bitchat.type", "Type", base.HEX, TYPES),
  ttl = ProtoField.uint8("bitchat.ttl", "TTL"),
  timestamp = ProtoField.uint64("bitchat.timestamp", "Timestamp (ms since epoch)"),
  flags = ProtoField.uint8("bitchat.flags", "Flags", base.HEX),
  f_recipient = ProtoField.bool("bitchat.flags.recipient", "Has recipient", 8, nil, 0x01),
  f_signature = ProtoField.bool("bitchat.flags.signature", "Has signature", 8, nil, 0x02),
  f_compressed = ProtoField.bool("bitchat.flags.compressed", "Compressed", 8, nil, 0x04),
  f_route = ProtoField.bool("bitchat.flags.route", "Has route", 8, nil, 0x08),
  f_rsr = ProtoField.bool("bitchat.flags.rsr", "Request-sync response", 8, nil, 0x10),
  payload_len = ProtoField.uint32("bitchat.payload_len", "Payload length"),
  sender = ProtoField.bytes("bitchat.sender", "Sender id"),
  recipient = ProtoField.bytes("bitchat.recipient", "Recipient id"),
  route_count = ProtoField.uint8("bitchat.route.count", "Route hops"),
  route_hop = ProtoField.bytes("bitchat.route.hop", "Route hop"),
  original_size = ProtoField.uint32("bitchat.original_size", "Original (inflated) size"),
  payload = ProtoField.bytes("bitchat.payload", "Payload"),
  text = ProtoField.string("bitchat.text", "Text"),
  signature = ProtoField.bytes("bitchat.signature", "Signature (Ed25519)"),
  trailing = ProtoField.bytes("bitchat.trailing", "Trailing bytes"),
  frag_id = ProtoField.bytes("bitchat.fragment.id", "Fragment id"),
  frag_index = ProtoField.uint16("bitchat.fragment.index", "Fragment index"),
  frag_total = ProtoField.uint16("bitchat.fragment.total", "Fragment total"),
  frag_type = ProtoField.uint8("bitchat.fragment.original_type", "Original type", base.HEX, TYPES),
  frag_chunk = ProtoField.bytes("bitchat.fragment.chunk", "Chunk"),
}
mesh.fields = {
  mf.version, mf.type, mf.ttl, mf.timestamp, mf.flags, mf.f_recipient, mf.f_signature,
  mf.f_compressed, mf.f_route, mf.f_rsr, mf.payload_len, mf.sender, mf.recipient,
  mf.route_count, mf.route_hop, mf.original_size, mf.payload, mf.text, mf.signature,
  mf.trailing, mf.frag_id, mf.frag_index, mf.frag_total, mf.frag_type, mf.frag_chunk,
}

local ef_truncated = ProtoExpert.new("bitchat.truncated", "Frame truncated",
  expert.group.MALFORMED, expert.severity.ERROR)
local ef_version = ProtoExpert.new("bitchat.bad_version", "Unknown frame version",
  expert.group.MALFORMED, expert.severity.ERROR)
mesh.experts = { ef_truncated, ef_version }

local function truncated(tree, tvb, pinfo)
  tree:add_proto_expert_info(ef_truncated)
  pinfo.cols.info:append(" [truncated]")
  return tvb:len()
end

function mesh.dissector(tvb, pinfo, tree)
  local n = tvb:len()
  local t = tree:add(mesh, tvb())
  if n < 14 then return truncated(t, tvb, pinfo) end
  local version = tvb(0, 1):uint()
  t:add(mf.version, tvb(0, 1))
  if version ~= 1 and version ~= 2 then
    t:add_proto_expert_info(ef_version)
    pinfo.cols.info = "BitChat ? (version " .. version .. ")"
    return n
  end
  local ptype = tvb(1, 1):uint()
  local ttl = tvb(2, 1):uint()
  t:add(mf.type, tvb(1, 1))
  t:add(mf.ttl, tvb(2, 1))
  t:add(mf.timestamp, tvb(3, 8))
  local flags = tvb(11, 1):uint()
  local ft = t:add(mf.flags, tvb(11, 1))
  ft:add(mf.f_recipient, tvb(11, 1))
  ft:add(mf.f_signature, tvb(11, 1))
  ft:add(mf.f_compressed, tvb(11, 1))
  ft:add(mf.f_route, tvb(11, 1))
  ft:add(mf.f_rsr, tvb(11, 1))
  local len_size = (version == 2) and 4 or 2
  if n < 12 + len_size then return truncated(t, tvb, pinfo) end
  local plen = tvb(12, len_size):uint()
  t:add(mf.payload_len, tvb(12, len_size))
  local off = 12 + len_size
  if off + 8 > n then return truncated(t, tvb, pinfo) end
  local sender = tvb(off, 8)
  t:add(mf.sender, sender)
  off = off + 8
  local info = (TYPES[ptype] or string.format("type 0x%02x", ptype)) .. " ttl=" .. ttl ..
    " from " .. tostring(sender:bytes())
  if bit.band(flags, 0x01) ~= 0 then
    if off + 8 > n then return truncated(t, tvb, pinfo) end
    t:add(mf.recipient, tvb(off, 8))
    info = info .. " to " .. tostring(tvb(off, 8):bytes())
    off = off + 8
  end
  if version == 2 and bit.band(flags, 0x08) ~= 0 then
    if off + 1 > n then return truncated(t, tvb, pinfo) end
    local count = tvb(off, 1):uint()
    local rt = t:add(mf.route_count, tvb(off, 1))
    off = off + 1
    if off + 8 * count > n then return truncated(t, tvb, pinfo) end
    for i = 0, count - 1 do rt:add(mf.route_hop, tvb(off + 8 * i, 8)) end
    off = off + 8 * count
  end
  if off + plen > n then return truncated(t, tvb, pinfo) end
  local body_off, body_len = off, plen
  if bit.band(flags, 0x04) ~= 0 and plen >= len_size then
    t:add(mf.original_size, tvb(off, len_size))
    body_off, body_len = off + len_size, plen - len_size
  end
  if body_len > 0 then
    local pt = t:add(mf.payload, tvb(body_off, body_len))
    if ptype == 0x20 and body_len >= 13 then
      pt:add(mf.frag_id, tvb(body_off, 8))
      pt:add(mf.frag_index, tvb(body_off + 8, 2))
      pt:add(mf.frag_total, tvb(body_off + 10, 2))
      pt:add(mf.frag_type, tvb(body_off + 12, 1))
      if body_len > 13 then pt:add(mf.frag_chunk, tvb(body_off + 13, body_len - 13)) end
      info = info .. string.format(" [%d/%d of %s]", tvb(body_off + 8, 2):uint() + 1,
        tvb(body_off + 10, 2):uint(), TYPES[tvb(body_off + 12, 1):uint()] or "?")
    elseif ptype == 0x02 and bit.band(flags, 0x04) == 0 then
      pt:add(mf.text, tvb(body_off, body_len))
    end
  end
  off = off + plen
  if bit.band(flags, 0x02) ~= 0 then
    if off + 64 > n then return truncated(t, tvb, pinfo) end
    t:add(mf.signature, tvb(off, 64))
    off = off + 64
  end
  if off < n then t:add(mf.trailing, tvb(off, n - off)) end
  pinfo.cols.protocol = "BitChat"
  pinfo.cols.info = info
  return n
end

function air.dissector(tvb, pinfo, tree)
  if tvb:len() < 12 then return 0 end
  local t = tree:add(air, tvb(0, 12))
  t:add(af.version, tvb(0, 1))
  t:add(af.event, tvb(1, 1))
  t:add(af.src, tvb(2, 2))
  t:add(af.dst, tvb(4, 2))
  t:add(af.link, tvb(6, 4))
  t:add(af.role, tvb(10, 1))
  pinfo.cols.src = "node " .. tvb(2, 2):uint()
  pinfo.cols.dst = "node " .. tvb(4, 2):uint()
  mesh.dissector(tvb(12):tvb(), pinfo, tree)
  local event = tvb(1, 1):uint()
  if event ~= 0 then pinfo.cols.info:prepend("[" .. (EVENTS[event] or "?") .. "] ") end
  return tvb:len()
end

local encaps = wtap_encaps or wtap
DissectorTable.get("wtap_encap"):add(encaps.USER0, air)
