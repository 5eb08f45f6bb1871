package fhirlupus.hapi;

import ca.uhn.fhir.batch2.api.IJobMaintenanceService;
import ca.uhn.fhir.batch2.jobs.config.Batch2JobsConfig;
import ca.uhn.fhir.batch2.jobs.export.BulkDataExportProvider;
import ca.uhn.fhir.batch2.maintenance.JobMaintenanceServiceImpl;
import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.support.IValidationSupport;
import ca.uhn.fhir.jpa.api.config.JpaStorageSettings;
import ca.uhn.fhir.jpa.api.config.ThreadPoolFactoryConfig;
import ca.uhn.fhir.jpa.api.dao.IFhirSystemDao;
import ca.uhn.fhir.jpa.batch2.JpaBatch2Config;
import ca.uhn.fhir.jpa.config.HapiJpaConfig;
import ca.uhn.fhir.jpa.config.r4.JpaR4Config;
import ca.uhn.fhir.jpa.config.util.HapiEntityManagerFactoryUtil;
import ca.uhn.fhir.jpa.model.config.PartitionSettings;
import ca.uhn.fhir.jpa.model.config.SubscriptionSettings;
import ca.uhn.fhir.jpa.model.dialect.HapiFhirH2Dialect;
import ca.uhn.fhir.jpa.provider.JpaCapabilityStatementProvider;
import ca.uhn.fhir.jpa.search.DatabaseBackedPagingProvider;
import ca.uhn.fhir.jpa.subscription.channel.config.SubscriptionChannelConfig;
import ca.uhn.fhir.jpa.subscription.match.config.SubscriptionProcessorConfig;
import ca.uhn.fhir.jpa.subscription.match.deliver.email.IEmailSender;
import ca.uhn.fhir.jpa.subscription.submit.config.SubscriptionSubmitterConfig;
import ca.uhn.fhir.rest.api.EncodingEnum;
import ca.uhn.fhir.rest.server.RestfulServer;
import ca.uhn.fhir.rest.server.provider.ResourceProviderFactory;
import ca.uhn.fhir.rest.server.util.ISearchParamRegistry;
import jakarta.persistence.EntityManagerFactory;
import org.apache.commons.dbcp2.BasicDataSource;
import org.eclipse.jetty.ee10.servlet.ServletContextHandler;
import org.eclipse.jetty.ee10.servlet.ServletHolder;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;
import org.eclipse.jetty.util.thread.QueuedThreadPool;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.beans.factory.config.ConfigurableListableBeanFactory;
import org.springframework.context.annotation.AnnotationConfigApplicationContext;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Condition;
import org.springframework.context.annotation.ConditionContext;
import org.springframework.context.annotation.Conditional;
import org.springframework.context.annotation.Configuration;
import org.springframework.context.annotation.Import;
import org.springframework.context.annotation.Primary;
import org.springframework.context.annotation.PropertySource;
import org.springframework.core.env.Environment;
import org.springframework.core.env.StandardEnvironment;
import org.springframework.core.io.ClassPathResource;
import org.springframework.core.io.support.ResourcePropertySource;
import org.springframework.core.type.AnnotatedTypeMetadata;
import org.springframework.orm.jpa.JpaTransactionManager;
import org.springframework.orm.jpa.LocalContainerEntityManagerFactoryBean;

import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.time.Duration;
import java.util.Properties;
import javax.sql.DataSource;

/**
 * Test-only HAPI FHIR JPA server (FHIR R4, in-memory H2) for the fhir_lupus test suite and CI.
 *
 * <p>Start: {@code java -jar hapi-test-server.jar --port 18080}. The FHIR base is
 * {@code http://127.0.0.1:PORT/fhir}. The listen address must be a loopback address.
 *
 * <p>Settings come from {@code application.properties} (in the jar), overridable by
 * {@code -Dkey=value}, {@code --key=value} arguments, or {@code HAPI_PORT} for the port.
 *
 * <p>{@code hapi.subscriptions=rest-hook} (or the environment variable {@code HAPI_SUBSCRIPTIONS=rest-hook})
 * adds HAPI's own subscription modules: see {@link RestHookSubscriptions}. Off by default.
 */
public final class HapiTestServer {

	private static final Logger ourLog = LoggerFactory.getLogger(HapiTestServer.class);
	static final String SUBSCRIPTIONS_PROPERTY = "hapi.subscriptions";
	static final String SUBSCRIPTIONS_REST_HOOK = "rest-hook";

	private HapiTestServer() {}

	public static void main(String[] theArgs) {
		try {
			run(theArgs);
		} catch (Throwable t) {
			// HAPI starts non-daemon threads (scheduler, pools): leave no half-started JVM behind.
			ourLog.error("HAPI FHIR test server failed to start", t);
			System.exit(1);
		}
	}

	private static void run(String[] theArgs) throws Exception {
		long start = System.nanoTime();
		applyArguments(theArgs);

		// Read the HTTP settings and fail fast on a bad address or a busy port,
		// before the (slow) start of the JPA layer.
		StandardEnvironment bootEnv = new StandardEnvironment();
		bootEnv.getPropertySources()
				.addLast(new ResourcePropertySource(new ClassPathResource("application.properties")));
		boolean subscriptions = subscriptionsOn(bootEnv);
		String host = bootEnv.getProperty("server.address", "127.0.0.1");
		int port = bootEnv.getProperty("server.port", Integer.class, 18080);
		String fhirPath = bootEnv.getProperty("hapi.fhir.path", "/fhir");
		InetAddress address = InetAddress.getByName(host);
		if (!address.isLoopbackAddress()) {
			throw new IllegalArgumentException("server.address must be a loopback address, got: " + host);
		}
		try (ServerSocket probe = new ServerSocket()) {
			probe.bind(new InetSocketAddress(address, port));
		}

		AnnotationConfigApplicationContext appCtx = new AnnotationConfigApplicationContext(AppConfig.class);
		Environment env = appCtx.getEnvironment();

		QueuedThreadPool threads = new QueuedThreadPool(env.getProperty("server.max-threads", Integer.class, 32), 4);
		threads.setName("http");
		Server jetty = new Server(threads);
		ServerConnector connector = new ServerConnector(jetty);
		connector.setHost(host);
		connector.setPort(port);
		jetty.addConnector(connector);

		ServletContextHandler handler = new ServletContextHandler();
		handler.setContextPath("/");
		ServletHolder holder = new ServletHolder("fhir", newRestfulServer(appCtx));
		holder.setInitOrder(1);
		handler.addServlet(holder, fhirPath + "/*");
		jetty.setHandler(handler);

		Runtime.getRuntime().addShutdownHook(new Thread(() -> {
			try {
				jetty.stop();
			} catch (Exception e) {
				ourLog.warn("Error stopping HTTP server", e);
			}
			appCtx.close();
		}, "shutdown"));

		jetty.start();
		ourLog.info(
				"HAPI FHIR test server ready at http://{}:{}{} in {} ms (subscriptions: {})",
				host,
				connector.getLocalPort(),
				fhirPath,
				Duration.ofNanos(System.nanoTime() - start).toMillis(),
				subscriptions ? SUBSCRIPTIONS_REST_HOOK : "off");
		jetty.join();
	}

	/**
	 * Whether {@code hapi.subscriptions} asks for REST-hook subscriptions. Spring reads the property from system
	 * properties ({@code -D}, {@code --hapi.subscriptions=}), then the environment ({@code HAPI_SUBSCRIPTIONS}),
	 * then application.properties. An unknown value stops the start: a typo must not silently leave it off.
	 */
	static boolean subscriptionsOn(Environment theEnv) {
		String value = theEnv.getProperty(SUBSCRIPTIONS_PROPERTY, "").trim();
		if (value.isEmpty() || value.equals("off")) {
			return false;
		}
		if (value.equals(SUBSCRIPTIONS_REST_HOOK)) {
			return true;
		}
		throw new IllegalArgumentException(
				SUBSCRIPTIONS_PROPERTY + " must be off or " + SUBSCRIPTIONS_REST_HOOK + ", got: " + value);
	}

	/** {@code --port N}, {@code --port=N} and {@code --some.key=value} become system properties. */
	private static void applyArguments(String[] theArgs) {
		String envPort = System.getenv("HAPI_PORT");
		if (envPort != null && !envPort.isBlank()) {
			System.setProperty("server.port", envPort.trim());
		}
		for (int i = 0; i < theArgs.length; i++) {
			String arg = theArgs[i];
			if (!arg.startsWith("--")) {
				throw new IllegalArgumentException("Unexpected argument: " + arg);
			}
			String key;
			String value;
			int eq = arg.indexOf('=');
			if (eq > 0) {
				key = arg.substring(2, eq);
				value = arg.substring(eq + 1);
			} else if (i + 1 < theArgs.length) {
				key = arg.substring(2);
				value = theArgs[++i];
			} else {
				throw new IllegalArgumentException("Missing value for " + arg);
			}
			if (key.equals("port")) {
				key = "server.port";
			}
			System.setProperty(key, value);
		}
	}

	private static RestfulServer newRestfulServer(AnnotationConfigApplicationContext theAppCtx) {
		Environment env = theAppCtx.getEnvironment();
		FhirContext fhirContext = theAppCtx.getBean(FhirContext.class);

		RestfulServer server = new RestfulServer(fhirContext);
		server.setServerName("fhir_lupus HAPI FHIR test server");
		server.setDefaultResponseEncoding(EncodingEnum.JSON);
		server.registerProviders(theAppCtx.getBean(ResourceProviderFactory.class).createProviders());
		server.registerProvider(theAppCtx.getBean("mySystemProviderR4"));
		server.registerProvider(theAppCtx.getBean(BulkDataExportProvider.class));

		DatabaseBackedPagingProvider paging = theAppCtx.getBean(DatabaseBackedPagingProvider.class);
		paging.setDefaultPageSize(env.getProperty("hapi.paging.default-page-size", Integer.class, 20));
		paging.setMaximumPageSize(env.getProperty("hapi.paging.max-page-size", Integer.class, 500));
		server.setPagingProvider(paging);

		JpaCapabilityStatementProvider capabilities = new JpaCapabilityStatementProvider(
				server,
				theAppCtx.getBean(IFhirSystemDao.class),
				theAppCtx.getBean(JpaStorageSettings.class),
				theAppCtx.getBean(ISearchParamRegistry.class),
				theAppCtx.getBean(IValidationSupport.class));
		capabilities.setImplementationDescription("fhir_lupus HAPI FHIR JPA test server (in-memory H2)");
		server.setServerConformanceProvider(capabilities);
		return server;
	}

	/** Spring configuration: HAPI's JPA R4 server, Batch2 and its standard jobs, on in-memory H2. */
	@Configuration
	@PropertySource("classpath:application.properties")
	@Import({
		JpaR4Config.class,
		HapiJpaConfig.class,
		JpaBatch2Config.class,
		// HAPI's Batch2 job definitions, as hapi-fhir-jpaserver-starter registers them: REINDEX
		// (started when a SearchParameter is written), the terminology delete jobs (started when a
		// CodeSystem with concepts is updated or deleted), delete-expunge, bulk export and import.
		Batch2JobsConfig.class,
		// In-process message broker; Batch2 sends its work notifications through it (and, when switched on,
		// the subscription modules their matching and delivery queues).
		SubscriptionChannelConfig.class,
		ThreadPoolFactoryConfig.class,
		RestHookSubscriptions.class
	})
	public static class AppConfig {

		@Bean
		public JpaStorageSettings storageSettings(Environment theEnv) {
			JpaStorageSettings s = new JpaStorageSettings();
			s.setResourceClientIdStrategy(JpaStorageSettings.ClientIdStrategyEnum.valueOf(
					theEnv.getProperty("hapi.client-id-strategy", "ANY")));
			s.setResourceServerIdStrategy(JpaStorageSettings.IdStrategyEnum.valueOf(
					theEnv.getProperty("hapi.server-id-strategy", "UUID")));
			s.setAllowExternalReferences(theEnv.getProperty("hapi.allow-external-references", Boolean.class, true));
			s.setAllowInlineMatchUrlReferences(true);
			s.setAutoCreatePlaceholderReferenceTargets(
					theEnv.getProperty("hapi.auto-create-placeholder-reference-targets", Boolean.class, false));
			s.setAllowMultipleDelete(true);
			s.setExpungeEnabled(true);
			s.setDeleteExpungeEnabled(true);
			// A test server must see its own writes at once: no reuse of cached search results.
			s.setReuseCachedSearchResultsForMillis(null);
			s.setEnableTaskBulkExportJobExecution(true);
			s.setJobFastTrackingEnabled(true);
			s.setEnableTaskPreExpandValueSets(false);
			s.setAdvancedHSearchIndexing(false);
			s.setHibernateSearchIndexFullText(false);
			s.setHibernateSearchIndexSearchParams(false);
			return s;
		}

		@Bean
		public PartitionSettings partitionSettings() {
			return new PartitionSettings();
		}

		@Bean(destroyMethod = "close")
		public BasicDataSource dataSource(Environment theEnv) {
			BasicDataSource ds = new BasicDataSource();
			ds.setDriver(new org.h2.Driver());
			ds.setUrl(theEnv.getProperty("hapi.datasource.url", "jdbc:h2:mem:hapi;DB_CLOSE_DELAY=-1;LOCK_TIMEOUT=60000"));
			ds.setUsername("sa");
			ds.setPassword("");
			ds.setMaxTotal(theEnv.getProperty("hapi.datasource.max-connections", Integer.class, 16));
			ds.setMaxWait(Duration.ofSeconds(30));
			return ds;
		}

		@Bean
		public LocalContainerEntityManagerFactoryBean entityManagerFactory(
				ConfigurableListableBeanFactory theBeanFactory,
				FhirContext theFhirContext,
				JpaStorageSettings theStorageSettings,
				DataSource theDataSource) {
			LocalContainerEntityManagerFactoryBean emf =
					HapiEntityManagerFactoryUtil.newEntityManagerFactory(theBeanFactory, theFhirContext, theStorageSettings);
			emf.setPersistenceUnitName("HAPI_PU");
			emf.setDataSource(theDataSource);
			// Spring lists the entity classes (packagesToScan). Without this, the jar they sit in
			// (the whole fat jar) becomes the persistence unit root and Hibernate indexes every
			// class in it at start-up, which costs many seconds.
			emf.setPersistenceUnitPostProcessors(pui -> pui.setPersistenceUnitRootUrl(null));
			Properties jpa = new Properties();
			jpa.put("hibernate.dialect", HapiFhirH2Dialect.class.getName());
			jpa.put("hibernate.hbm2ddl.auto", "update");
			jpa.put("hibernate.format_sql", "false");
			jpa.put("hibernate.show_sql", "false");
			jpa.put("hibernate.jdbc.batch_size", "20");
			jpa.put("hibernate.cache.use_query_cache", "false");
			jpa.put("hibernate.cache.use_second_level_cache", "false");
			jpa.put("hibernate.cache.use_structured_entries", "false");
			jpa.put("hibernate.cache.use_minimal_puts", "false");
			jpa.put("hibernate.search.enabled", "false");
			emf.setJpaProperties(jpa);
			return emf;
		}

		@Bean
		@Primary
		public JpaTransactionManager transactionManager(EntityManagerFactory theEntityManagerFactory) {
			return new JpaTransactionManager(theEntityManagerFactory);
		}

		/** Run the Batch2 maintenance pass (which drives $export jobs) more often than once a minute. */
		@Bean
		public Object batch2MaintenanceInterval(IJobMaintenanceService theService, Environment theEnv) {
			long millis = theEnv.getProperty("hapi.batch2.maintenance-interval-ms", Long.class, 1000L);
			if (theService instanceof JobMaintenanceServiceImpl impl) {
				impl.setScheduledJobFrequencyMillis(millis);
			}
			return millis;
		}
	}

	/**
	 * HAPI's REST-hook subscriptions, only with {@code hapi.subscriptions=rest-hook}: the same configuration classes
	 * hapi-fhir-jpaserver-starter imports (submitter: validates Subscriptions and queues every write for matching;
	 * processor: activates Subscriptions, matches in memory, delivers over HTTP). Off, none of them is in the context,
	 * so no write is matched and every other test and benchmark runs as before.
	 */
	@Configuration
	@Conditional(RestHookSwitch.class)
	@Import({SubscriptionSubmitterConfig.class, SubscriptionProcessorConfig.class})
	public static class RestHookSubscriptions {

		@Bean
		public SubscriptionSettings subscriptionSettings(Environment theEnv) {
			SubscriptionSettings s = new SubscriptionSettings();
			s.addSupportedSubscriptionType(org.hl7.fhir.dstu2.model.Subscription.SubscriptionChannelType.RESTHOOK);
			// Criteria are evaluated against the written resource, without a database search per write.
			s.setEnableInMemorySubscriptionMatching(true);
			// A new or changed Subscription goes to the activating queue at once instead of waiting for the
			// next submission pass (HAPI applies this to Subscription resources only).
			s.setSubscriptionChangeQueuedImmediately(true);
			// Every other write is stored as a pending message that a scheduled pass submits for matching:
			// HAPI's default of every 5 s would delay each notification by up to 5 s.
			s.setSubscriptionIntervalInMs(theEnv.getProperty("hapi.subscriptions.submit-interval-ms", Long.class, 1000L));
			return s;
		}

		/** The processor wires an e-mail sender even when e-mail is not a supported channel: one that refuses. */
		@Bean
		public IEmailSender emailSender() {
			return theDetails -> {
				throw new UnsupportedOperationException("e-mail subscriptions are not supported by this test server");
			};
		}
	}

	/** Spring condition of {@link RestHookSubscriptions}. */
	public static class RestHookSwitch implements Condition {
		@Override
		public boolean matches(ConditionContext theContext, AnnotatedTypeMetadata theMetadata) {
			return subscriptionsOn(theContext.getEnvironment());
		}
	}
}
