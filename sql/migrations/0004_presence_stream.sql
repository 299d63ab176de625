-- Presence as a per-room stream, like the room change stream: each room-wide presence
-- change (a user's first daemon arrives, their last one leaves) takes the room's next
-- presence rev under the room's row lock and is logged, so a presence doorbell makes the
-- daemons read the changes after the rev they hold instead of the whole room's presence
-- (a 5,000-member join storm otherwise reads millions of rows).
-- Soft state, like pgchat.presence: UNLOGGED, emptied by a crash, after which every
-- daemon reads the whole room again (its LISTEN connection was lost too).
create unlogged table if not exists pgchat.presence_rooms (
  room_id bigint primary key,
  rev bigint not null
);
create unlogged table if not exists pgchat.presence_log (
  room_id bigint not null,
  rev bigint not null,
  user_id bigint not null,
  online boolean not null,
  logged_at timestamptz not null default now(),
  primary key (room_id, rev)
);
create index if not exists idx_presence_log_at on pgchat.presence_log (logged_at);
revoke all on pgchat.presence_rooms, pgchat.presence_log from public;
