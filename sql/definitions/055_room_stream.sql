-- The room stream as sockets see it (docs/protocol.md, "The room stream"): live frames
-- name the member a membership or read-marker change is about, and `join {sinceRev}`
-- replays the compacted state after a rev.

-- A room member's role. Roles of their own (owner, moderator, member; SPEC §6.3) come
-- with the conversations feature; until then the room's creator is its owner.
create or replace function private.member_role(room bigint, member bigint) returns text
language sql stable security definer set search_path = api, public as $$
  select case when r.created_by = member then 'owner' else 'member' end
    from api.chat_rooms r where r.id = room;
$$;

-- `pgchat.changes_after_rooms` with, for membership and read-marker changes, the
-- member's display name and (joined) role, which `member_joined`, `member_left` and
-- `read` carry. A function of its own, not new columns on that one: a daemon of the
-- previous release keeps calling it unchanged during a rolling upgrade.
create or replace function pgchat.stream_after_rooms(rooms bigint[], after_revs bigint[], max_rows integer)
returns table (room_id bigint, rev bigint, kind text, seq bigint, user_id bigint, body text,
               name text, role text)
language plpgsql stable security definer set search_path = api, public as $$
#variable_conflict use_column
begin
  return query
  select c.room_id, c.rev, c.kind, c.seq, c.user_id, c.body,
         case when c.kind in ('joined', 'left', 'read') then private.display_name(c.user_id) end,
         case when c.kind = 'joined' then private.member_role(c.room_id, c.user_id) end
    from pgchat.changes_after_rooms(rooms, after_revs, max_rows) c;
end
$$;

-- What `join {sinceRev}` replays, read as the caller (members only): the room's state
-- changed in (after_rev, until_rev], compacted. `messages`: every message whose latest
-- change is in that range, once, as its current state, in rev order. `changes`: the
-- latest membership and read-marker change of each member in that range (private.
-- room_changes keeps one row per member and kind). `boundary_seq`: the newest seq among
-- messages whose latest change is at or before after_rev; a replayed message above it
-- is new to the client. The range is at most 1,000 revs (the daemon's replay limit), so
-- the cost is bounded whatever the room's history.
create or replace function api.room_replay(room_id bigint, after_rev bigint, until_rev bigint)
returns json
language plpgsql stable security definer set search_path = api, public as $$
declare
  boundary bigint;
  msgs json;
  changes json;
begin
  perform private.require_user();
  if not private.is_member(room_replay.room_id) then
    raise exception 'not a member of this room' using errcode = '42501';
  end if;
  if until_rev - after_rev > 1000 then
    raise exception 'replay range over 1000 revs' using errcode = '22023';
  end if;
  -- Walks down from the newest message past those changed after after_rev: bounded by
  -- the changes since, not by history.
  select c.seq into boundary from api.chat_messages c
   where c.room_id = room_replay.room_id and c.rev <= room_replay.after_rev
   order by c.seq desc limit 1;
  select coalesce(json_agg(private.message_json(m) order by m.rev), '[]'::json) into msgs
    from (select * from api.chat_messages c
           where c.room_id = room_replay.room_id
             and c.rev > room_replay.after_rev and c.rev <= room_replay.until_rev
           order by c.rev limit 1000) m;
  select coalesce(json_agg(json_build_object(
           'rev', c.rev,
           'kind', case when c.kind = 'read' then 'read' when c.present then 'joined' else 'left' end,
           'user', json_build_object('id', c.key, 'name', private.display_name(c.key)),
           'role', case when c.kind = 'member' and c.present
                        then private.member_role(c.room_id, c.key) end,
           'seq', c.seq) order by c.rev), '[]'::json) into changes
    from private.room_changes c
   where c.room_id = room_replay.room_id and c.kind in ('member', 'read')
     and c.rev > room_replay.after_rev and c.rev <= room_replay.until_rev;
  return json_build_object('boundary_seq', coalesce(boundary, 0), 'messages', msgs,
                           'changes', changes);
end
$$;

revoke execute on function
  private.member_role(bigint, bigint), pgchat.stream_after_rooms(bigint[], bigint[], integer),
  api.room_replay(bigint, bigint, bigint)
  from public;
grant execute on function pgchat.stream_after_rooms(bigint[], bigint[], integer) to authenticator;
grant execute on function api.room_replay(bigint, bigint, bigint) to authenticated;
