//! Typed rows, by property, through the whole client: any rows the kit can
//! store (any `i64` key, any text without NUL, any `i32`, any finite
//! `f64`, any `bool`, each nullable), inserted with parameters, read back
//! with `query_as` equal to what was inserted.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use kalam_testkit::TestServer;
use kalam_tokio::{AuthProvider, KalamLinkClient, QueryRequest};
use proptest::prelude::*;

#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
struct Item {
    id: i64,
    name: Option<String>,
    qty: Option<i32>,
    price: Option<f64>,
    active: Option<bool>,
}

struct Kit {
    rt: tokio::runtime::Runtime,
    client: KalamLinkClient,
    _server: TestServer,
}

fn kit() -> &'static Kit {
    static KIT: OnceLock<Kit> = OnceLock::new();
    KIT.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (server, client) = rt.block_on(async {
            let server = TestServer::start().await;
            let client = KalamLinkClient::builder()
                .base_url(server.url())
                .no_proxy()
                .auth(AuthProvider::system_user_auth(server.root_password().to_owned()))
                .build()
                .unwrap();
            client
                .execute_query("CREATE NAMESPACE IF NOT EXISTS props")
                .await
                .unwrap();
            (server, client)
        });
        Kit {
            rt,
            client,
            _server: server,
        }
    })
}

fn item() -> impl Strategy<Value = Item> {
    (
        any::<i64>(),
        proptest::option::of(any::<String>().prop_map(|s| s.replace('\0', ""))),
        proptest::option::of(any::<i32>()),
        proptest::option::of(any::<f64>().prop_filter("finite", |f| f.is_finite())),
        proptest::option::of(any::<bool>()),
    )
        .prop_map(|(id, name, qty, price, active)| Item {
            id,
            name,
            qty,
            price,
            active,
        })
}

static TABLE: AtomicUsize = AtomicUsize::new(0);

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn any_rows_the_kit_stores_read_back_equal(items in proptest::collection::vec(item(), 0..8)) {
        let mut items = items;
        items.sort_by_key(|i| i.id);
        items.dedup_by_key(|i| i.id);
        let kit = kit();
        let table = format!("props.t{}", TABLE.fetch_add(1, Ordering::Relaxed));
        let back: Vec<Item> = kit.rt.block_on(async {
            let c = &kit.client;
            c.execute_query(&format!(
                "CREATE TABLE {table} (id BIGINT PRIMARY KEY, name TEXT, qty INT, price DOUBLE, active BOOLEAN)"
            ))
            .await
            .unwrap();
            for i in &items {
                let insert = QueryRequest::new(format!(
                    "INSERT INTO {table} (id, name, qty, price, active) VALUES ($1, $2, $3, $4, $5)"
                ))
                .param(i.id)
                .param(i.name.clone())
                .param(i.qty)
                .param(i.price)
                .param(i.active);
                c.execute(insert).await.unwrap();
            }
            c.query_as(format!("SELECT id, name, qty, price, active FROM {table} ORDER BY id")).await.unwrap()
        });
        prop_assert_eq!(back, items);
    }
}
