-- Edits and deletions (SPEC §6.2). Triggers, not the RPCs, keep the rules, so an UPDATE
-- or DELETE typed in psql or sent through PostgREST takes a rev and rings the doorbell
-- like api.edit_message and api.delete_message do.

-- A message keeps its place: no UPDATE moves it to another seq or room. A deleted
-- message never changes again. Any other change takes the room's next rev: an edit of
-- the text sets `edited_at`; setting `deleted_at` clears the text and the room's count.
create or replace function private.message_changing() returns trigger
language plpgsql security definer set search_path = api, public as $$
begin
  if new.seq <> old.seq or new.room_id <> old.room_id then
    raise exception 'a message''s seq and room never change' using errcode = '22023';
  end if;
  if new is not distinct from old then
    return new;
  end if;
  if old.deleted_at is not null then
    raise exception 'a deleted message cannot be changed' using errcode = '22023';
  end if;
  if new.deleted_at is not null then
    new.message := '';
    update api.chat_rooms
       set last_rev = last_rev + 1, message_count = greatest(message_count - 1, 0)
     where id = new.room_id
    returning last_rev into new.rev;
    return new;
  end if;
  if new.message <> old.message then
    new.edited_at := now();
  end if;
  new.rev := private.next_rev(new.room_id);
  return new;
end
$$;

drop trigger if exists chat_messages_changing on api.chat_messages;
create trigger chat_messages_changing
  before update on api.chat_messages
  for each row execute function private.message_changing();

-- A DELETE becomes a soft delete: the row stays (no hole in seq), its text goes, and
-- who deleted it is kept; the UPDATE takes the rev and rings the doorbell. Only the
-- rows of a room being deleted really go (the cascade runs after the room row is gone).
create or replace function private.soft_delete_message() returns trigger
language plpgsql security definer set search_path = api, public as $$
begin
  if not exists (select 1 from api.chat_rooms r where r.id = old.room_id) then
    return old;
  end if;
  if old.deleted_at is null then
    update api.chat_messages c
       set deleted_at = now(), deleted_by = api.current_user_id()
     where c.id = old.id;
  end if;
  return null;
end
$$;

drop trigger if exists chat_messages_soft_delete on api.chat_messages;
create trigger chat_messages_soft_delete
  before delete on api.chat_messages
  for each row execute function private.soft_delete_message();

revoke execute on function private.message_changing(), private.soft_delete_message() from public;

-- Authors edit and delete their own messages, in rooms they are still in, whether by
-- these RPCs or by PATCH/DELETE on /chat_messages. Only the text can be written.
grant update (message) on api.chat_messages to authenticated;
grant delete on api.chat_messages to authenticated;

drop policy if exists chat_messages_update on api.chat_messages;
create policy chat_messages_update on api.chat_messages for update to authenticated
  using (user_id = api.current_user_id() and private.is_member(room_id))
  with check (user_id = api.current_user_id());

drop policy if exists chat_messages_delete on api.chat_messages;
create policy chat_messages_delete on api.chat_messages for delete to authenticated
  using (user_id = api.current_user_id() and private.is_member(room_id));

-- The message a member may see, for the RPCs below: not found for a non-member.
create or replace function private.own_message(message_id bigint) returns api.chat_messages
language plpgsql stable set search_path = api, public as $$
declare
  m api.chat_messages;
begin
  select * into m from api.chat_messages c where c.id = own_message.message_id;
  if not found then
    raise exception 'message not found' using errcode = 'P0002';
  end if;
  if m.user_id is distinct from api.current_user_id() then
    raise exception 'only the author may change a message' using errcode = '42501';
  end if;
  return m;
end
$$;

-- Replaces my message's text; returns its new state. Not after deletion.
create or replace function api.edit_message(message_id bigint, message text) returns json
language plpgsql set search_path = api, public as $$
declare
  m api.chat_messages;
begin
  perform private.require_user();
  m := private.own_message(edit_message.message_id);
  if m.deleted_at is not null then
    raise exception 'a deleted message cannot be edited' using errcode = '22023';
  end if;
  update api.chat_messages c set message = edit_message.message
   where c.id = m.id
  returning * into m;
  return private.message_json(m);
end
$$;

-- Deletes my message (softly); returns its new state. Deleting it again changes nothing.
create or replace function api.delete_message(message_id bigint) returns json
language plpgsql set search_path = api, public as $$
declare
  m api.chat_messages;
begin
  perform private.require_user();
  m := private.own_message(delete_message.message_id);
  delete from api.chat_messages c where c.id = m.id;
  select * into m from api.chat_messages c where c.id = m.id;
  return private.message_json(m);
end
$$;

revoke execute on function
  private.own_message(bigint), api.edit_message(bigint, text), api.delete_message(bigint)
  from public;
grant execute on function
  private.own_message(bigint), api.edit_message(bigint, text), api.delete_message(bigint)
  to authenticated;
