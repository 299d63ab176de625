//! What a database's schema is, for tests that compare two: a fingerprint of the
//! catalog (definitions, privileges, policies, triggers and settings of everything
//! pgchat owns) and a normalised `pg_dump --schema-only`.

pub const FINGERPRINT: &str = r#"
select string_agg(line, E'\n' order by line) from (
  select format('proc %s.%s(%s) %s acl=%s', n.nspname, p.proname,
                pg_get_function_identity_arguments(p.oid), md5(pg_get_functiondef(p.oid)),
                coalesce(p.proacl::text, 'default')) as line
    from pg_proc p join pg_namespace n on n.oid = p.pronamespace
   where n.nspname in ('api', 'private', 'pgchat')
  union all
  select format('class %s.%s %s rls=%s force=%s opts=%s acl=%s persistence=%s',
                n.nspname, c.relname, c.relkind, c.relrowsecurity, c.relforcerowsecurity,
                c.reloptions, coalesce(c.relacl::text, 'default'), c.relpersistence)
    from pg_class c join pg_namespace n on n.oid = c.relnamespace
   where n.nspname in ('api', 'private', 'pgchat')
  union all
  select format('column %s.%s %s notnull=%s default=%s identity=%s acl=%s',
                a.attrelid::regclass, a.attname, format_type(a.atttypid, a.atttypmod),
                a.attnotnull, pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attacl)
    from pg_attribute a
    join pg_class c on c.oid = a.attrelid
    join pg_namespace n on n.oid = c.relnamespace
    left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
   where n.nspname in ('api', 'private', 'pgchat') and a.attnum > 0 and not a.attisdropped
  union all
  select format('constraint %s %s %s', co.conrelid::regclass, co.conname,
                pg_get_constraintdef(co.oid))
    from pg_constraint co join pg_namespace n on n.oid = co.connamespace
   where n.nspname in ('api', 'private', 'pgchat')
  union all
  select format('index %s', indexdef) from pg_indexes
   where schemaname in ('api', 'private', 'pgchat')
  union all
  select format('view %s.%s %s', schemaname, viewname, md5(definition)) from pg_views
   where schemaname in ('api', 'private', 'pgchat')
  union all
  select format('policy %s %s cmd=%s permissive=%s roles=%s using=%s check=%s',
                po.polrelid::regclass, po.polname, po.polcmd, po.polpermissive,
                po.polroles::regrole[], pg_get_expr(po.polqual, po.polrelid),
                pg_get_expr(po.polwithcheck, po.polrelid))
    from pg_policy po
  union all
  select format('trigger %s enabled=%s', pg_get_triggerdef(t.oid), t.tgenabled)
    from pg_trigger t where not t.tgisinternal
  union all
  select format('schema %s acl=%s', nspname, coalesce(nspacl::text, 'default'))
    from pg_namespace where nspname in ('api', 'private', 'pgchat', 'public')
  union all
  select format('default acl %s %s %s %s', defaclrole::regrole, defaclnamespace::regnamespace,
                defaclobjtype, defaclacl)
    from pg_default_acl
  union all
  select format('extension %s %s', extname, extversion) from pg_extension
  union all
  select format('setting %s', cfg)
    from pg_db_role_setting s, unnest(s.setconfig) cfg
   where s.setdatabase = (select oid from pg_database where datname = current_database())
  union all
  select format('jwt key kid=%s alg=%s secret=%s active=%s', kid, alg, md5(secret), active)
    from private.jwt_keys
  union all
  select format('settings notify_channel=%s', notify_channel) from private.settings
  union all
  select format('role %s login=%s inherit=%s member_of=%s', r.rolname, r.rolcanlogin,
                r.rolinherit,
                (select array_agg(m.roleid::regrole order by m.roleid::regrole::text)
                   from pg_auth_members m where m.member = r.oid))
    from pg_roles r where r.rolname in ('anon', 'authenticated', 'authenticator')
) lines
"#;

pub async fn fingerprint(db: &super::TestDb) -> String {
    let admin = db.admin().await;
    admin.query_one(FINGERPRINT, &[]).await.unwrap().get(0)
}

/// `pg_dump --schema-only` without what differs between two dumps of one schema:
/// comments, blank lines, session settings and the `\restrict` keys of newer pg_dumps.
pub fn schema_dump(db: &super::TestDb) -> String {
    let out = std::process::Command::new("pg_dump")
        .args(["--schema-only", "--dbname", &db.admin_url])
        .output()
        .expect("pg_dump runs");
    assert!(
        out.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| {
            !(l.is_empty()
                || l.starts_with("--")
                || l.starts_with("SET ")
                || l.starts_with("SELECT pg_catalog.set_config")
                || l.starts_with("\\restrict")
                || l.starts_with("\\unrestrict"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}
