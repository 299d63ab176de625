-- Chat tables, indexes and the room list view (plan 000 §1, SPEC §1).

create table if not exists api.chat_rooms (
  id          bigint generated always as identity primary key,
  name        text not null check (char_length(name) between 1 and 100),
  description text not null default '' check (char_length(description) <= 1000),
  created_by  bigint not null default api.current_user_id() references private.users(id),
  created_at  timestamptz not null default now(),
  -- Highest seq handed out in this room. Incremented under the row lock by the message
  -- insert trigger, so seqs are gap-free and commit in order within a room.
  last_seq    bigint not null default 0
);

create table if not exists api.room_members (
  id            bigint generated always as identity primary key,
  room_id       bigint not null references api.chat_rooms(id) on delete cascade,
  user_id       bigint not null default api.current_user_id() references private.users(id),
  joined_at     timestamptz not null default now(),
  last_read_seq bigint not null default 0 check (last_read_seq >= 0),
  unique (room_id, user_id)
);

create table if not exists api.chat_messages (
  id         bigint generated always as identity primary key,
  room_id    bigint not null references api.chat_rooms(id) on delete cascade,
  seq        bigint not null,
  user_id    bigint not null default api.current_user_id() references private.users(id),
  message    text not null,
  client_id  text,
  created_at timestamptz not null default now(),
  constraint chat_messages_message_not_empty check (char_length(message) >= 1),
  constraint chat_messages_message_too_long check (char_length(message) <= 5000),
  constraint chat_messages_client_id_length check (char_length(client_id) between 1 and 100),
  unique (room_id, seq),
  unique (room_id, user_id, client_id)
);

-- The room change stream (SPEC §6.1): every change to a room's visible state takes the
-- room's next `rev` under the room row lock, as a message takes its seq. Added in place,
-- so a database of the first release gains it with its rows: messages get rev = seq.
alter table api.chat_rooms add column if not exists last_rev bigint;
update api.chat_rooms set last_rev = last_seq where last_rev is null;
alter table api.chat_rooms alter column last_rev set default 0;
alter table api.chat_rooms alter column last_rev set not null;
alter table api.chat_messages add column if not exists rev bigint;
update api.chat_messages set rev = seq where rev is null;
alter table api.chat_messages alter column rev set not null;

create index if not exists idx_messages_room_rev on api.chat_messages (room_id, rev);
create index if not exists idx_room_members_user on api.room_members (user_id);
create index if not exists idx_room_members_room on api.room_members (room_id);
create index if not exists idx_messages_room_time on api.chat_messages (room_id, created_at desc);

-- Assigns the next seq (and rev) from the room row. The UPDATE takes the row lock and holds it to
-- commit, so a later seq can never commit before an earlier one in the same room.
-- A missing room is not reported here: this trigger runs before the RLS check, and an
-- error of its own would tell a non-member which room ids exist. With seq 0 the row goes
-- on to RLS (which refuses non-members alike) and then to the foreign key.
create or replace function private.assign_message_seq() returns trigger
language plpgsql security definer set search_path = api, public as $$
begin
  update api.chat_rooms set last_seq = last_seq + 1, last_rev = last_rev + 1
   where id = new.room_id
  returning last_seq, last_rev into new.seq, new.rev;
  new.seq := coalesce(new.seq, 0);
  new.rev := coalesce(new.rev, 0);
  return new;
end
$$;

drop trigger if exists chat_messages_assign_seq on api.chat_messages;
create trigger chat_messages_assign_seq
  before insert on api.chat_messages
  for each row execute function private.assign_message_seq();

-- Membership test used by the RLS policies. SECURITY DEFINER so policies on
-- room_members can ask about room_members without recursing into themselves.
-- PL/pgSQL so its plan is kept per connection (see private.display_name): every join,
-- message and history page runs it.
create or replace function private.is_member(room bigint) returns boolean
language plpgsql stable security definer set search_path = api as $$
begin
  return exists (
    select 1 from api.room_members m
     where m.room_id = is_member.room and m.user_id = api.current_user_id());
end
$$;

-- Functions in private are not for clients unless granted by name (040 grants
-- is_member). Per-schema default privileges cannot revoke PUBLIC's execute right, so
-- each file revokes it from the functions it creates.
revoke execute on function private.assign_message_seq(), private.is_member(bigint) from public;

create or replace view api.my_chat_rooms with (security_invoker = true) as
select r.id,
       r.name,
       r.description,
       r.created_by,
       r.created_at,
       r.last_seq,
       (select count(*) from api.room_members m where m.room_id = r.id) as member_count,
       (select count(*) from api.chat_messages c where c.room_id = r.id) as message_count,
       (select c.created_at from api.chat_messages c
         where c.room_id = r.id order by c.seq desc limit 1) as last_message_at,
       -- My own messages never count as unread.
       (select count(*) from api.chat_messages c
         where c.room_id = r.id and c.seq > me.last_read_seq
           and c.user_id <> me.user_id) as unread_count,
       me.last_read_seq,
       me.joined_at
  from api.chat_rooms r
  join api.room_members me on me.room_id = r.id and me.user_id = api.current_user_id();
