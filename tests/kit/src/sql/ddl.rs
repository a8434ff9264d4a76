//! DDL: namespaces, users, tables.

use super::*;

impl Engine {
    pub(super) fn namespace_ddl(&mut self, n: usize, stmt: &str) -> Result<Outcome, SqlError> {
        let toks: Vec<&str> = stmt.split_whitespace().collect();
        let if_clause = toks.len() >= 5 && toks[2].eq_ignore_ascii_case("IF");
        let name = toks.last().map(|s| s.trim_matches('"').to_owned()).unwrap_or_default();
        if !valid_ident(&name) {
            return Err(SqlError::new(
                400,
                "INVALID_SQL",
                "SQL statement is invalid or not allowed",
            ));
        }
        if toks[0].eq_ignore_ascii_case("DROP") {
            if !self.namespaces.remove(&name) && !if_clause {
                return Err(SqlError::exec(n, format!("Not found: Namespace '{name}' not found")));
            }
            return Ok(Outcome::Message(format!("Namespace '{name}' dropped successfully")));
        }
        if self.namespaces.contains(&name) {
            if if_clause {
                return Ok(Outcome::Message(format!("Namespace '{name}' already exists")));
            }
            return Err(SqlError::exec(
                n,
                format!("Already exists: Namespace '{name}' already exists"),
            ));
        }
        self.namespaces.insert(name.clone());
        Ok(Outcome::Message(format!("Namespace '{name}' created successfully")))
    }

    pub(super) fn create_user(&mut self, n: usize, stmt: &str) -> Result<Outcome, SqlError> {
        // CREATE USER 'alice' WITH PASSWORD 'x' ROLE user [EMAIL 'e']
        let toks = tokenize(stmt);
        let words: Vec<&Tok> = toks.iter().filter(|t| !matches!(t, Tok::Space(_))).collect();
        let text = |t: &Tok| match t {
            Tok::Str(s) => Some(s.clone()),
            Tok::Word(w) => Some(w.trim_matches('"').to_owned()),
            _ => None,
        };
        let name = words.get(2).and_then(|t| text(t)).unwrap_or_default();
        let find = |kw: &str| {
            words
                .iter()
                .position(|t| matches!(t, Tok::Word(w) if w.eq_ignore_ascii_case(kw)))
                .and_then(|i| words.get(i + 1))
                .and_then(|t| text(t))
        };
        let password =
            find("PASSWORD").ok_or_else(|| SqlError::new(400, "INVALID_SQL", "CREATE USER needs a PASSWORD"))?;
        let role = find("ROLE").unwrap_or_else(|| "user".into()).to_ascii_lowercase();
        if !["user", "service", "dba", "system"].contains(&role.as_str()) {
            return Err(SqlError::new(400, "INVALID_SQL", format!("Invalid role '{role}'")));
        }
        if name.is_empty() || name.contains("..") || name.contains('/') || name.contains('\\') {
            return Err(SqlError::new(400, "INVALID_SQL", "Invalid user id"));
        }
        if self.users.contains_key(&name) {
            return Err(SqlError::exec(
                n,
                format!("Already exists: User '{name}' already exists"),
            ));
        }
        let hash = bcrypt::hash(&password, self.bcrypt_cost).map_err(internal)?;
        self.users.insert(
            name.clone(),
            UserRecord {
                role,
                hash,
                email: find("EMAIL"),
                created_at: crate::now_rfc3339_millis(),
                created_ms: crate::unix_now_ms(),
            },
        );
        Ok(Outcome::Message(format!("User '{name}' created")))
    }

    pub(super) fn alter_user_role(&mut self, stmt: &str) -> Result<Outcome, SqlError> {
        // ALTER USER alice SET ROLE service
        let words: Vec<&str> = stmt.split_whitespace().collect();
        let name = words.get(2).map(|w| w.trim_matches(['\'', '"'])).unwrap_or_default();
        let role = words
            .get(5)
            .map(|w| w.trim_matches(['\'', '"', ';']).to_ascii_lowercase());
        let Some(role) = role.filter(|r| ["user", "service", "dba", "system"].contains(&r.as_str())) else {
            return Err(SqlError::new(400, "INVALID_SQL", "Expected role name after SET ROLE"));
        };
        let user = self
            .users
            .get_mut(name)
            .ok_or_else(|| SqlError::new(400, "NOT_FOUND", format!("User '{name}' not found")))?;
        user.role = role;
        Ok(Outcome::Message(format!("User '{name}' updated")))
    }

    pub(super) fn create_table(&mut self, n: usize, stmt: &str) -> Result<Outcome, SqlError> {
        let upper = stmt.to_ascii_uppercase();
        let open = stmt
            .find('(')
            .ok_or_else(|| SqlError::new(400, "INVALID_SQL", "CREATE TABLE needs columns"))?;
        let close = matching_paren(stmt, open)
            .ok_or_else(|| SqlError::new(400, "INVALID_SQL", "sql parser error: unbalanced parentheses"))?;
        let head: Vec<&str> = stmt[..open].split_whitespace().collect();
        let if_not_exists = upper[..open].contains("IF NOT EXISTS");
        let full = head.last().map(|s| s.trim_matches('"').to_owned()).unwrap_or_default();
        let Some((ns, table)) = full.split_once('.') else {
            return Err(SqlError::new(
                400,
                "INVALID_SQL",
                "Table name must be namespace-qualified (ns.table)",
            ));
        };
        if !valid_ident(ns) || !valid_ident(table) {
            return Err(SqlError::new(
                400,
                "INVALID_SQL",
                "SQL statement is invalid or not allowed",
            ));
        }
        let tail = upper[close..].to_string();
        // `CREATE [USER|SHARED|STREAM] TABLE` or `WITH (TYPE = '…')`; a
        // plain CREATE TABLE is a SHARED table, as on the server.
        let says =
            |kind: &str| head.iter().any(|w| w.eq_ignore_ascii_case(kind)) || tail.contains(&format!("'{kind}'"));
        let kind = if says("USER") {
            TableKind::User
        } else if says("STREAM") {
            TableKind::Stream
        } else {
            TableKind::Shared
        };
        let columns = parse_columns(&stmt[open + 1..close])?;
        if !self.namespaces.contains(ns) {
            return Err(SqlError::exec(n, format!("Not found: Namespace '{ns}' does not exist")));
        }
        let key = full.to_ascii_lowercase();
        if self.tables.contains_key(&key) {
            if if_not_exists {
                return Ok(Outcome::Message(format!("Table {full} already exists")));
            }
            return Err(SqlError::exec(
                n,
                format!("Already exists: Table '{full}' already exists"),
            ));
        }
        let def = TableDef {
            full: full.clone(),
            kind,
            columns,
        };
        let ddl = create_sqlite_table(&def);
        if kind.per_user() {
            for c in self.conns.values() {
                c.execute_batch(&ddl).map_err(|e| SqlError::exec(n, e))?;
            }
        } else {
            let c = self.conn("root")?;
            c.execute_batch(&ddl).map_err(|e| SqlError::exec(n, e))?;
        }
        self.tables.insert(key, def);
        let kind_name = match kind {
            TableKind::User => "user",
            TableKind::Shared => "shared",
            TableKind::Stream => "stream",
        };
        Ok(Outcome::Message(format!(
            "CREATE TABLE via Raft consensus: {kind_name} table {full} created successfully"
        )))
    }

    pub(super) fn drop_table(&mut self, n: usize, stmt: &str) -> Result<Outcome, SqlError> {
        let toks: Vec<&str> = stmt.split_whitespace().collect();
        if toks.len() < 3 {
            return Err(SqlError::new(
                400,
                "INVALID_SQL",
                "sql parser error: Expected: identifier, found: EOF",
            ));
        }
        let if_exists = toks.len() >= 5 && toks[2].eq_ignore_ascii_case("IF");
        let full = toks.last().map(|s| s.trim_matches('"').to_owned()).unwrap_or_default();
        let Some(def) = self.tables.remove(&full.to_ascii_lowercase()) else {
            if if_exists {
                return Ok(Outcome::Message(format!("Table {full} does not exist")));
            }
            return Err(SqlError::exec(n, format!("Table not found: {full}")));
        };
        let drop = format!("DROP TABLE IF EXISTS {}", def.sqlite_name());
        for c in self.conns.values() {
            let _ = c.execute_batch(&drop);
        }
        Ok(Outcome::Message(format!("Table {full} dropped successfully")))
    }
}

pub(super) fn parse_columns(body: &str) -> Result<Vec<ColumnDef>, SqlError> {
    let mut cols = Vec::new();
    let mut table_pk: Vec<String> = Vec::new();
    for part in split_top_level(body, ',') {
        let part = part.trim();
        let upper = part.to_ascii_uppercase();
        if upper.starts_with("PRIMARY KEY") {
            if let (Some(a), Some(b)) = (part.find('('), part.rfind(')'))
                && a < b
            {
                table_pk = part[a + 1..b]
                    .split(',')
                    .map(|s| s.trim().trim_matches('"').to_owned())
                    .collect();
            }
            continue;
        }
        let mut words = part.split_whitespace();
        let (Some(name), Some(ty)) = (words.next(), words.next()) else {
            return Err(SqlError::new(
                400,
                "INVALID_SQL",
                format!("sql parser error: bad column definition '{part}'"),
            ));
        };
        let ktype = ktype_of_sql(ty)
            .ok_or_else(|| SqlError::new(400, "INVALID_SQL", format!("Unsupported data type '{ty}'")))?;
        let pk = upper.contains("PRIMARY KEY");
        cols.push(ColumnDef {
            name: name.trim_matches('"').to_owned(),
            ktype,
            pk,
            not_null: pk || upper.contains("NOT NULL"),
            default_now: upper.contains("DEFAULT NOW()") || upper.contains("DEFAULT CURRENT_TIMESTAMP"),
        });
    }
    for c in cols.iter_mut() {
        if table_pk.iter().any(|p| p.eq_ignore_ascii_case(&c.name)) {
            c.pk = true;
            c.not_null = true;
        }
    }
    if cols.is_empty() {
        return Err(SqlError::new(400, "INVALID_SQL", "CREATE TABLE needs columns"));
    }
    Ok(cols)
}
