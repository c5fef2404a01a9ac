// CqlProbe: one real CQL round-trip against a Cassandra node, for deploy/cassandra.sh.
// Uses the DataStax driver 3.x that cassandra-all already depends on (no cqlsh).
//   java -cp <cassandra lib>/*:<dir> CqlProbe HOST PORT [smoke]
// Prints "release_version cluster_name" of system.local and exits 0, else exits 1.
// With "smoke": also creates a keyspace (rf 1) and table, writes and reads back a
// row at QUORUM, and drops the keyspace again. With "drop NAME": drops keyspace NAME
// (letters, digits and _ only) if it exists.
import com.datastax.driver.core.Cluster;
import com.datastax.driver.core.ConsistencyLevel;
import com.datastax.driver.core.SimpleStatement;
import com.datastax.driver.core.Row;
import com.datastax.driver.core.Session;
import com.datastax.driver.core.SocketOptions;

public final class CqlProbe {
    public static void main(String[] args) {
        String host = args.length > 0 ? args[0] : "127.0.0.1";
        int port = args.length > 1 ? Integer.parseInt(args[1]) : 9042;
        try (Cluster cluster = Cluster.builder()
                .addContactPoint(host)
                .withPort(port)
                .withoutJMXReporting()
                .withoutMetrics()
                .withSocketOptions(new SocketOptions().setConnectTimeoutMillis(5000).setReadTimeoutMillis(10000))
                .build();
             Session session = cluster.connect()) {
            Row row = session.execute("SELECT release_version, cluster_name FROM system.local").one();
            System.out.println(row.getString("release_version") + " " + row.getString("cluster_name"));
            if (args.length > 2 && args[2].equals("smoke")) {
                session.execute("CREATE KEYSPACE IF NOT EXISTS evchat_smoke WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}");
                session.execute("CREATE TABLE IF NOT EXISTS evchat_smoke.t (k text PRIMARY KEY, v text)");
                session.execute(new SimpleStatement("INSERT INTO evchat_smoke.t (k, v) VALUES ('a', 'b')")
                        .setConsistencyLevel(ConsistencyLevel.QUORUM));
                Row r = session.execute(new SimpleStatement("SELECT v FROM evchat_smoke.t WHERE k = 'a'")
                        .setConsistencyLevel(ConsistencyLevel.QUORUM)).one();
                if (r == null || !"b".equals(r.getString("v"))) throw new IllegalStateException("smoke read-back failed");
                session.execute("DROP KEYSPACE evchat_smoke");
                System.out.println("smoke ok: create keyspace/table, write+read at QUORUM, drop");
            }
            if (args.length > 3 && args[2].equals("drop")) {
                String ks = args[3];
                if (!ks.matches("[A-Za-z0-9_]+")) throw new IllegalArgumentException("bad keyspace name " + ks);
                session.execute("DROP KEYSPACE IF EXISTS " + ks);
                System.out.println("dropped keyspace " + ks);
            }
            System.exit(0);
        } catch (Throwable t) {
            System.err.println("cql probe failed: " + t);
            System.exit(1);
        }
    }
}
